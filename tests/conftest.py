"""Shared pytest fixtures for the whole suite. Add yours in a titled section below; keep it tidy.

Database (PostgreSQL and SQLite; PostgreSQL is started if it is down, and a test FAILS, never
skips, if it still cannot be reached):

- ``database_url``: URL of a database migrated to head with empty tables, private to one
  test. Parametrised, so a test using it (or ``session``/``engine``/``workbench_env``) runs
  twice: ``[sqlite]`` (a fresh file in ``tmp_path``, copied from a template migrated once per
  test session) and ``[postgresql]`` (one database per test session, migrated once; every
  table is emptied, ids restarted, and leftover connections ended before each test). Do not
  change its schema (use ``empty_database_url``). To run on one backend only::

      @pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

- ``empty_database_url``: a brand-new database with no tables, never migrated (for migration
  tests; on PostgreSQL a CREATE DATABASE per test, so slower).
- ``engine``: ``db.session.get_engine(database_url)``.
- ``session``: a ``Session`` on ``database_url`` (``expire_on_commit=False``). Nothing is
  committed for you; it is closed at teardown.
- ``workbench_env``: sets ``WORKBENCH_DATA_DIR`` to a fresh ``tmp_path/"data"`` and
  ``WORKBENCH_DATABASE_URL`` to ``database_url`` (other ``WORKBENCH_*`` variables cleared) and
  returns the resulting ``db.settings.Settings``; code under test that calls
  ``get_settings()``/``session_scope()`` without arguments then uses the test's database.

Redis:

- ``redis_url``: ``redis://127.0.0.1:6379/<n>``, starting ``redis-server`` if it is down
  (fails loudly if it cannot). ``<n>`` (1..15) is picked per test session from the pid, which
  keeps concurrent test runs apart most of the time, not always: name your queues and keys
  uniquely (e.g. with ``uuid4().hex``) rather than flushing the database.

Always on: bcrypt's cost factor is lowered to its minimum (4) for the suite
(``db.users.BCRYPT_ROUNDS``), so creating and logging in users costs milliseconds.

The PostgreSQL server defaults to ``postgresql+psycopg://postgres@127.0.0.1:5432/test``;
set ``WORKBENCH_TEST_POSTGRES_URL`` to use another (any database there; tests create their own).
"""

from __future__ import annotations

import itertools
import os
import secrets
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import db.users
from db.migrate import upgrade
from db.session import SessionLocal, dispose_engines, get_engine
from db.settings import Settings, get_settings

DATABASE_BACKENDS = ["sqlite", "postgresql"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by what it needs, from its fixtures (the markers are listed in pyproject.toml): the
    [postgresql] case of a database fixture is `postgres`, a test using Redis is `redis`, a test driving the
    browser is `browser`. `pytest -m "not slow and not postgres and not browser"` is the quick inner loop."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        fixtures = set(getattr(item, "fixturenames", ()))
        if "postgresql" in (params.get("database_url"), params.get("empty_database_url")):
            item.add_marker(pytest.mark.postgres)
        if "redis_url" in fixtures:
            item.add_marker(pytest.mark.redis)
        if "browser" in fixtures:
            item.add_marker(pytest.mark.browser)

# ---------------------------------------------------------------------------------------------
# PostgreSQL server
# ---------------------------------------------------------------------------------------------

POSTGRES_URL = os.environ.get("WORKBENCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
POSTGRES_START_COMMAND = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
# Test databases are named wbtest_<pid>_<random>_<suffix>; the pid lets a later run drop the
# leftovers of a run that crashed, without touching those of a run still going.
_TEST_DATABASE_PREFIX = "wbtest_"
_RUN_TAG = f"{_TEST_DATABASE_PREFIX}{os.getpid()}_{secrets.token_hex(3)}"
_database_numbers = itertools.count(1)


def _libpq_conninfo(sqlalchemy_url: str, database: str | None = None) -> str:
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def _postgres_url_for(database: str) -> str:
    return make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)


def _postgres_admin_execute(*statements: str) -> list[tuple]:
    # CREATE/DROP DATABASE cannot run inside a transaction, hence autocommit.
    with psycopg.connect(_libpq_conninfo(POSTGRES_URL), autocommit=True, connect_timeout=5) as connection:
        rows: list[tuple] = []
        for statement in statements:
            cursor = connection.execute(statement)
            if cursor.description is not None:
                rows.extend(cursor.fetchall())
        return rows


def ensure_postgres_running(timeout_s: float = 30.0) -> None:
    """Make sure the PostgreSQL server answers, starting the local cluster if needed; else fail."""
    try:
        _postgres_admin_execute("SELECT 1")
        return
    except psycopg.OperationalError:
        pass
    started = subprocess.run(POSTGRES_START_COMMAND, shell=True, capture_output=True, text=True)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _postgres_admin_execute("SELECT 1")
            return
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"PostgreSQL at {make_url(POSTGRES_URL)!s} is unreachable after `{POSTGRES_START_COMMAND}` "
                    f"(exit {started.returncode}, stderr: {started.stderr.strip()!r}): {error}",
                    pytrace=False,
                )
            time.sleep(0.5)


def _drop_postgres_database(name: str) -> None:
    # FORCE ends connections a test left open (a leaked session must not leak a database).
    _postgres_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_databases_of_dead_runs() -> None:
    rows = _postgres_admin_execute(
        f"SELECT datname FROM pg_database WHERE datname LIKE '{_TEST_DATABASE_PREFIX}%'"
    )
    for (name,) in rows:
        pid_text = name[len(_TEST_DATABASE_PREFIX):].split("_", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            _drop_postgres_database(name)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@pytest.fixture(scope="session")
def _postgres_shared_database() -> Iterator[str]:
    """A PostgreSQL database migrated to head once per session and emptied before each test.

    CREATE DATABASE costs most of a second per test; TRUNCATE a few milliseconds.
    """
    ensure_postgres_running()
    _drop_databases_of_dead_runs()
    name = f"{_RUN_TAG}_shared"
    _postgres_admin_execute(f'CREATE DATABASE "{name}"')
    try:
        upgrade(_postgres_url_for(name))
        yield name
    finally:
        dispose_engines()
        _drop_postgres_database(name)


def _empty_postgres_tables(database: str) -> None:
    conninfo = _libpq_conninfo(POSTGRES_URL, database=database)
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
        # A session an earlier test leaked would hold locks the DELETEs wait for; end it.
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        tables = [row[0] for row in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )]
        quoted = [f'"{table}"' for table in tables]
        try:
            # DELETE on a few rows costs milliseconds; TRUNCATE makes new files and fsyncs
            # (~0.3 s). Replica mode skips the foreign-key triggers, so order does not matter
            # (models and jobs point at each other). Needs a superuser, as the local one is.
            with connection.transaction():
                connection.execute("SET LOCAL session_replication_role = replica")
                for table in quoted:
                    connection.execute(f"DELETE FROM {table}")
        except psycopg.errors.InsufficientPrivilege:
            connection.execute(f"TRUNCATE {', '.join(quoted)} CASCADE")
        # Ids start at 1 again, as in a new SQLite file.
        connection.execute(
            "SELECT setval(sequence.oid, 1, false) FROM pg_class AS sequence "
            "JOIN pg_namespace AS namespace ON namespace.oid = sequence.relnamespace "
            "WHERE sequence.relkind = 'S' AND namespace.nspname = 'public'"
        )


# ---------------------------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session, copied by every test."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def _copy_sqlite(source: Path, destination: Path) -> None:
    # The backup API copies a consistent image even if a WAL file is present; a plain file
    # copy could miss pages still in the WAL.
    source_connection = sqlite3.connect(source)
    destination_connection = sqlite3.connect(destination)
    try:
        source_connection.backup(destination_connection)
    finally:
        source_connection.close()
        destination_connection.close()


# ---------------------------------------------------------------------------------------------
# Database fixtures
# ---------------------------------------------------------------------------------------------


def _fresh_database(request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool) -> Iterator[str]:
    backend = request.param
    if backend == "sqlite":
        path = tmp_path / "workbench-test.db"
        if migrated:
            _copy_sqlite(request.getfixturevalue("_sqlite_template"), path)
        try:
            yield f"sqlite:///{path}"
        finally:
            dispose_engines()
    elif backend == "postgresql" and migrated:
        name = request.getfixturevalue("_postgres_shared_database")
        _empty_postgres_tables(name)
        try:
            yield _postgres_url_for(name)
        finally:
            dispose_engines()  # return nothing to the next test but an empty pool
    elif backend == "postgresql":
        ensure_postgres_running()
        name = f"{_RUN_TAG}_{next(_database_numbers)}"
        _postgres_admin_execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        try:
            yield _postgres_url_for(name)
        finally:
            dispose_engines()  # close pooled connections before the database goes
            _drop_postgres_database(name)
    else:
        raise ValueError(f"unknown database backend {backend!r}; expected one of {DATABASE_BACKENDS}")


@pytest.fixture(params=DATABASE_BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database migrated to head, private to this test (see the module docstring)."""
    yield from _fresh_database(request, tmp_path, migrated=True)


@pytest.fixture(params=DATABASE_BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database with no tables at all, private to this test."""
    yield from _fresh_database(request, tmp_path, migrated=False)


@pytest.fixture
def engine(database_url: str) -> Engine:
    return get_engine(database_url)


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    session = SessionLocal(database_url)
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def workbench_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Settings:
    for name in list(os.environ):
        if name.startswith("WORKBENCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DATABASE_URL", database_url)
    # Workers started by tests do not probe their device: a probe in progress would hold a test's first job.
    monkeypatch.setenv("WORKBENCH_THROUGHPUT_PROBES", "false")
    settings = get_settings()
    settings.ensure_directories()
    return settings


@pytest.fixture
def one_torch_thread(monkeypatch) -> Iterator[None]:
    """Train tiny models on one intra-op thread: with two cores shared by the test worker
    subprocesses, spinning OpenMP threads make tiny steps many times slower, not faster. OMP_NUM_THREADS=1
    too, so a job run in the test's process keeps it (the thread budget, llm/threads.py, obeys it)."""
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_START_COMMAND = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(REDIS_PORT),
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
]


def ensure_redis_running(timeout_s: float = 15.0) -> None:
    """Make sure Redis answers on 127.0.0.1:6379, starting a server if needed; else fail."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2)
    try:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            pass
        for directory in ("/var/lib/redis", "/var/log/redis"):
            Path(directory).mkdir(parents=True, exist_ok=True)
        started = subprocess.run(REDIS_START_COMMAND, capture_output=True, text=True)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError as error:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable after starting redis-server "
                        f"(exit {started.returncode}, output: {(started.stdout + started.stderr).strip()!r}): {error}",
                        pytrace=False,
                    )
                time.sleep(0.2)
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    ensure_redis_running()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{1 + os.getpid() % 15}"


# ---------------------------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    # 2**12 bcrypt rounds cost ~0.25 s per hash; tests create and log in many users.
    # Verification reads the cost from the stored hash, so this changes nothing else.
    saved = db.users.BCRYPT_ROUNDS
    db.users.BCRYPT_ROUNDS = 4
    yield
    db.users.BCRYPT_ROUNDS = saved


# ---------------------------------------------------------------------------------------------
# Worker and queue (owned by worker/; used by tests/jobs/test_jobs.py, tests/worker/test_worker_integration.py)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def job_queue(workbench_env: Settings, redis_url: str) -> Iterator[str]:
    """A Celery queue of this test's own on the real Redis at ``redis_url``; yields its name.

    Sets ``WORKBENCH_BROKER_URL`` and ``WORKBENCH_WORKER_QUEUES`` (so jobs are sent to this queue,
    and a worker subprocess started with ``os.environ`` consumes it) and reconfigures
    ``worker.runtime.celery_app.app``. The queue's keys are deleted afterwards and the app is pointed back
    at whatever the restored environment names.
    """
    from uuid import uuid4

    from worker.jobs.messages import configure
    from worker.runtime.celery_app import app

    queue = f"wbtest-{uuid4().hex[:12]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_BROKER_URL", redis_url)
        patch.setenv("WORKBENCH_WORKER_QUEUES", queue)
        configure(app)
        try:
            yield queue
        finally:
            client = redis.Redis.from_url(redis_url)
            try:
                # The queue and kombu's routing-table entries for it (small, but never reused).
                client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
            finally:
                client.close()
    configure(app)


@pytest.fixture
def queued_job_ids(redis_url: str, job_queue: str):
    """A function returning the job ids of the run_job messages waiting in ``job_queue``, oldest first."""
    import base64
    import json

    def read() -> list[int]:
        client = redis.Redis.from_url(redis_url)
        try:
            # kombu pushes new messages on the left and workers pop from the right.
            raw_messages = client.lrange(job_queue, 0, -1)[::-1]
        finally:
            client.close()
        ids = []
        for raw in raw_messages:
            envelope = json.loads(raw)
            body = json.loads(base64.b64decode(envelope["body"]))  # protocol 2: [args, kwargs, embed]
            ids.append(body[0][0])
        return ids

    return read


# ----------------------------------------------------------------------------- the REST API

TRAINER = ("trainer1", "trainer-password")
LABELER = ("labeler1", "labeler-password")
ADMIN = ("admin1", "admin-password")


@pytest.fixture
def api_settings(workbench_env: Settings, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for the test's database and data dir, with the shared test Redis as the broker."""
    from worker.runtime.celery_app import app as celery_app
    from worker.jobs.messages import configure

    monkeypatch.setenv("WORKBENCH_BROKER_URL", redis_url)
    settings = get_settings()
    configure(celery_app, settings)  # an earlier test may have pointed Celery elsewhere
    return settings


@pytest.fixture
def users(api_settings: Settings, session: Session) -> dict:
    from db.models import Role
    from db.users import create_user
    from web.auth import verified_credentials

    made = {
        "trainer": create_user(session, *TRAINER, Role.trainer),
        "labeler": create_user(session, *LABELER, Role.labeler),
        "admin": create_user(session, *ADMIN, Role.admin),
    }
    session.commit()
    verified_credentials.clear()  # user names repeat across tests; their hashes do not
    return made


@pytest.fixture
def client(api_settings: Settings, users: dict):
    from fastapi.testclient import TestClient

    from web.app import create_app

    with TestClient(create_app(api_settings)) as test_client:
        yield test_client


class StopOnQuestion:
    """A stand-in heartbeat for handler tests: says "stop" the n-th time it is asked."""

    def __init__(self, n: int):
        self.n, self.asked = n, 0

    def should_stop(self) -> bool:
        self.asked += 1
        return self.asked >= self.n
