"""Engines and sessions: one engine per database URL per process, and a transactional scope.

Usage::

    from db.session import session_scope

    with session_scope() as session:          # commits on success, rolls back on error
        session.add(Job(kind="pretrain"))

Engines are cached per ``(url, process id)`` and the cache is emptied in a forked child, so a
Celery prefork worker never shares its parent's pooled connections (a shared socket or SQLite
handle corrupts both sides). SQLite connections get WAL mode, a 30 s busy timeout and
``foreign_keys=ON``; PostgreSQL connections are pre-pinged so a restarted server costs one
retry, not an error page.

SQLite note: pysqlite starts a transaction only at the first INSERT/UPDATE/DELETE, so a
SELECT followed by an UPDATE in one session is not atomic. Claim a queued job with one
conditional UPDATE (``... WHERE id = :id AND status = 'queued'``) and check ``rowcount``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool, StaticPool

from db.settings import get_settings, normalize_database_url

# Long enough for a writer to wait out a checkpoint or a burst of metric inserts from other
# workers; SQLite allows one writer at a time and WAL makes readers never wait.
SQLITE_BUSY_TIMEOUT_SECONDS = 30
# How long a web request waits for another writer's lock before it is answered 503.
WEB_LOCK_TIMEOUT_SECONDS = 5

_EngineKey = tuple[str, int, "float | None"]  # (url, pid, lock timeout)
_engines: dict[_EngineKey, Engine] = {}
_sessionmakers: dict[_EngineKey, sessionmaker[Session]] = {}
_lock = threading.Lock()


def database_url() -> str:
    """The configured database URL (``WORKBENCH_DATABASE_URL`` or the SQLite file in the data dir)."""
    return get_settings().database_url


def create_workbench_engine(
    url: str,
    *,
    sqlite_foreign_keys: bool = True,
    poolclass: type[Pool] | None = None,
    lock_timeout_seconds: float | None = None,
    **engine_kwargs: Any,
) -> Engine:
    """A new, uncached engine configured the workbench way. Most code wants `get_engine`.

    ``lock_timeout_seconds``: how long a statement waits for another transaction's lock before it
    fails (SQLite "database is locked", PostgreSQL lock_not_available); None: SQLite's 30 s default,
    PostgreSQL's (wait as long as it takes).

    ``sqlite_foreign_keys=False`` exists for migrations: Alembic's batch mode rebuilds a SQLite
    table by copy-and-drop, and with foreign keys on, the DROP would cascade-delete rows of
    other tables (metrics of jobs, say).
    """
    url = normalize_database_url(url)
    parsed = make_url(url)
    kwargs: dict[str, Any] = dict(engine_kwargs)
    if poolclass is not None:
        kwargs["poolclass"] = poolclass

    if parsed.get_backend_name() == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        connect_args = kwargs.setdefault("connect_args", {})
        busy_timeout = SQLITE_BUSY_TIMEOUT_SECONDS if lock_timeout_seconds is None else lock_timeout_seconds
        connect_args.setdefault("timeout", busy_timeout)
        if in_memory:
            # Every new connection to :memory: is a new, empty database; share one.
            kwargs.setdefault("poolclass", StaticPool)
            connect_args.setdefault("check_same_thread", False)
        else:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        _install_sqlite_pragmas(engine, foreign_keys=sqlite_foreign_keys, wal=not in_memory,
                                busy_timeout_seconds=busy_timeout)
        return engine

    if lock_timeout_seconds is not None and parsed.get_backend_name() == "postgresql":
        options = f"-c lock_timeout={int(lock_timeout_seconds * 1000)}"
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args["options"] = f"{connect_args['options']} {options}" if connect_args.get("options") else options

    # Connections in the pool can be dead after a database restart or an idle-timeout on a
    # proxy; a cheap ping on checkout replaces them instead of failing the request.
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _engine_key(url: str | None, lock_timeout_seconds: float | None) -> _EngineKey:
    url = normalize_database_url(url or database_url())
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        lock_timeout_seconds = None  # one shared in-memory database: a second engine would be another one
    return (url, os.getpid(), lock_timeout_seconds)


def get_engine(url: str | None = None, *, lock_timeout_seconds: float | None = None) -> Engine:
    """The engine for ``url`` (default: `database_url()`) in this process, created on first use."""
    key = _engine_key(url, lock_timeout_seconds)
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = create_workbench_engine(key[0], lock_timeout_seconds=key[2])
                _engines[key] = engine
    return engine


def get_sessionmaker(url: str | None = None, *, lock_timeout_seconds: float | None = None) -> sessionmaker[Session]:
    """The session factory bound to `get_engine(url)`; ``expire_on_commit=False``.

    Objects stay readable after commit (a web handler returns a row it just saved; a worker
    reads ``job.params`` after committing ``status=running``) without a surprise reload.
    """
    key = _engine_key(url, lock_timeout_seconds)
    factory = _sessionmakers.get(key)
    if factory is None:
        engine = get_engine(key[0], lock_timeout_seconds=key[2])
        with _lock:
            factory = _sessionmakers.setdefault(key, sessionmaker(bind=engine, expire_on_commit=False))
    return factory


def SessionLocal(url: str | None = None, *, lock_timeout_seconds: float | None = None) -> Session:  # noqa: N802
    """A new session on this process's engine for ``url``; the caller commits and closes it.
    (The name is the conventional one for "a new session".)"""
    return get_sessionmaker(url, lock_timeout_seconds=lock_timeout_seconds)()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block ends normally and rolls back if it raises."""
    session = SessionLocal(url)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Close every pooled connection of this process's engines and forget them.

    For tests that drop a database, and for shutdown; the next `get_engine` starts afresh.
    """
    with _lock:
        engines = [engine for (_, pid, _), engine in _engines.items() if pid == os.getpid()]
        _engines.clear()
        _sessionmakers.clear()
    for engine in engines:
        engine.dispose()


def _forget_engines_after_fork() -> None:
    # In the child: drop the parent's engines without closing their connections (close=False),
    # because those sockets and file handles still belong to the parent. Keying the cache by
    # pid already stops reuse; this also frees the memory and any pool references. The lock
    # is replaced, not released: a thread of the parent may have held it at the fork.
    global _lock
    _lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()
    _sessionmakers.clear()


os.register_at_fork(after_in_child=_forget_engines_after_fork)


def _install_sqlite_pragmas(engine: Engine, *, foreign_keys: bool, wal: bool, busy_timeout_seconds: float) -> None:
    @event.listens_for(engine, "connect")
    def _set_sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL itself may have to wait for another writer.
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_seconds * 1000)}")
            if wal:
                # WAL lets readers (the web UI) run while a worker writes; it is stored in the
                # file, so this is a no-op after the first connection.
                cursor.execute("PRAGMA journal_mode = WAL")
                # NORMAL is durable across application crashes in WAL mode and much faster.
                cursor.execute("PRAGMA synchronous = NORMAL")
            # Off by default in SQLite, for compatibility; we want the schema's FKs enforced.
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()


def with_retries(operation: Callable[[], Any], session: Session | None = None,
                 attempts: int = 5, delay_s: float = 0.5) -> Any:
    """Run a DB operation again after OperationalError (a locked SQLite, a restarting PostgreSQL).

    `session` is rolled back before each retry, so a half-done transaction is not repeated on top
    of itself.
    """
    for attempt in range(attempts):
        try:
            return operation()
        except OperationalError:
            if session is not None:
                session.rollback()
            if attempt == attempts - 1:
                raise
            time.sleep(delay_s * (attempt + 1))
