"""Bring a database to the current schema with Alembic, configured in code.

``upgrade()`` is what ``workbench serve`` and the worker call at start; ``python -m db.migrate``
does the same from a shell. The Alembic config is built here and points at the
``migrations/`` directory next to this file, so it works from a source checkout and from an
installed wheel alike, with no ``alembic.ini``.

Two processes starting at once (web and worker) must not both create the tables: the run
holds a PostgreSQL advisory lock, or on SQLite an exclusive lock on a file next to the
database, and the second waits and then finds nothing left to do.

Command line::

    python -m db.migrate                      # upgrade to head (WORKBENCH_DATABASE_URL)
    python -m db.migrate --url sqlite:///x.db upgrade
    python -m db.migrate current
    python -m db.migrate downgrade base
    python -m db.migrate revision -m "add tags" --autogenerate   # for developers
"""

from __future__ import annotations

import argparse
import fcntl
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

from db.session import create_workbench_engine, database_url
from db.settings import normalize_database_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Any constant works as long as every workbench process uses the same one ("workbnch" as a
# number; it fits PostgreSQL's signed bigint).
_PG_ADVISORY_LOCK_KEY = int.from_bytes(b"workbnch", "big")


def alembic_config(url: str | None = None) -> Config:
    """An Alembic `Config` for our migrations and ``url`` (default: the configured database).

    The URL travels in ``config.attributes``, not in the ini options, because configparser
    would choke on a ``%`` in a URL-encoded password.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = normalize_database_url(url or database_url())
    return config


def head_revision() -> str:
    """The newest revision in ``migrations/versions``."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    engine = create_workbench_engine(normalize_database_url(url or database_url()), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def is_up_to_date(url: str | None = None) -> bool:
    """True when the database is at the head revision (for health checks and start-up guards)."""
    return current_revision(url) == head_revision()


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate the database at ``url`` (default: the configured one) up to ``revision``."""
    _run_locked(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str | None, revision: str) -> None:
    """Migrate down to ``revision`` (``"base"`` drops every table). Destroys data."""
    _run_locked(url, lambda config: command.downgrade(config, revision))


def _run_locked(url: str | None, alembic_command) -> None:  # noqa: ANN001 - a Config -> None callable
    config = alembic_config(url)
    url = config.attributes["database_url"]
    # Foreign keys off on SQLite during migrations: see create_workbench_engine.
    engine = create_workbench_engine(url, sqlite_foreign_keys=False, poolclass=NullPool)
    try:
        with _sqlite_file_lock(url), engine.connect() as connection:
            _take_postgres_lock(connection)
            config.attributes["connection"] = connection
            alembic_command(config)
        # The advisory lock is session-scoped; closing the connection (NullPool really
        # closes it) releases it.
    finally:
        engine.dispose()


def _take_postgres_lock(connection: Connection) -> None:
    if connection.dialect.name != "postgresql":
        return
    connection.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_ADVISORY_LOCK_KEY})")
    # End the implicit transaction the SELECT opened: Alembic treats an open transaction as
    # the caller's and would not commit the migration. The lock survives the commit.
    connection.commit()


@contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        yield
        return
    lock_path = Path(parsed.database).expanduser().resolve().with_name(Path(parsed.database).name + ".migrate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file is closed
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m db.migrate", description="Workbench database migrations.")
    parser.add_argument("--url", help="database URL (default: WORKBENCH_DATABASE_URL or the SQLite file in the data dir)")
    commands = parser.add_subparsers(dest="command")
    up = commands.add_parser("upgrade", help="migrate up (default command)")
    up.add_argument("revision", nargs="?", default="head")
    down = commands.add_parser("downgrade", help="migrate down; 'base' drops every table")
    down.add_argument("revision")
    commands.add_parser("current", help="print the database's revision")
    new = commands.add_parser("revision", help="write a new migration file (developers)")
    new.add_argument("-m", "--message", required=True)
    new.add_argument("--autogenerate", action="store_true", help="diff the models against the database")
    args = parser.parse_args(argv)

    if args.command in (None, "upgrade"):
        revision = getattr(args, "revision", "head")
        upgrade(args.url, revision)
        print(f"database at {current_revision(args.url)} (head {head_revision()})")
    elif args.command == "downgrade":
        downgrade(args.url, args.revision)
        print(f"database at {current_revision(args.url)}")
    elif args.command == "current":
        print(current_revision(args.url) or "empty (never migrated)")
    elif args.command == "revision":
        # Sequential ids (0002, 0003, ...) read better than hashes and sort in the directory.
        config = alembic_config(args.url)
        next_id = f"{len(list(ScriptDirectory.from_config(config).walk_revisions())) + 1:04d}"
        command.revision(config, message=args.message, autogenerate=args.autogenerate, rev_id=next_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
