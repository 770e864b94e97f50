"""The web app as the labeling benchmark serves it: `web.app.create_app` unchanged, plus a layer that tells
each client where its request's time went on the server, in a `Server-Timing` answer header.

    uvicorn bench.labeling_server:create_app --factory      (what bench/bench_labeling.py starts)

Per request, in milliseconds (`name;dur=x`):
  total     from the request reaching the app (ASGI) to its answer's start (status and headers)
  queue     waiting for a thread of the pool (FastAPI runs sync dependencies and routes there)
  thread    running in pool threads (wall), and `cpu` the CPU those threads used: thread - cpu is time
            waiting for the GIL, the database or the disk
  pool      waiting for a database connection from the engine's pool (its liveness check included)
  db        executing SQL statements and commits, of which `write` INSERT/UPDATE/DELETE (on SQLite this includes
            waiting for the database's one write lock) and `commit` the COMMITs
  held      from a transaction's first write to its commit's (or rollback's) end: how long this request kept other
            writers waiting (SQLite's write lock; PostgreSQL's row locks)
  auth      checking the HTTP Basic credentials, of which `bcrypt` the hash check (on a cache miss)
  progress  computing the labeler's progress counts on their own (a pair shown reads them in its own statement,
            timed with the SQL)
  hops      how many times the request went to the thread pool, `sql` how many statements it ran, and
            `connects` how many new database connections it opened (counts, not times)

Measuring this way changes nothing the app does: the wrappers time calls and pass them through. It lives
in bench/ and not in the app because production has no use for it.
"""

from __future__ import annotations

import contextvars
import time
from functools import wraps

import anyio.to_thread
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.pool import Pool

TIMES = ("total", "queue", "thread", "cpu", "pool", "db", "write", "commit", "held", "auth", "bcrypt", "progress")
COUNTS = ("hops", "sql", "connects")
WRITES = ("INSERT", "UPDATE", "DELETE")

_timings: contextvars.ContextVar[dict | None] = contextvars.ContextVar("bench_request_timings", default=None)


def _add(name: str, seconds: float) -> None:
    timings = _timings.get()
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + seconds


def _count(name: str) -> None:
    timings = _timings.get()
    if timings is not None:
        timings[name] = timings.get(name, 0) + 1


def _timed(function, name: str):
    @wraps(function)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _add(name, time.perf_counter() - started)
    return timed


# ----------------------------------------------------------------------------- the thread pool

_run_sync = anyio.to_thread.run_sync


async def _run_sync_timed(function, *args, **kwargs):
    submitted = time.perf_counter()

    def in_thread(*inner):
        started, cpu_started = time.perf_counter(), time.thread_time()
        _add("queue", started - submitted)
        _count("hops")
        try:
            return function(*inner)
        finally:
            _add("thread", time.perf_counter() - started)
            _add("cpu", time.thread_time() - cpu_started)

    return await _run_sync(in_thread, *args, **kwargs)


# ----------------------------------------------------------------------------- the database

def _statement_starts(conn, cursor, statement, parameters, context, executemany):
    conn.info["bench_statement_started"] = time.perf_counter()


def _statement_ends(conn, cursor, statement, parameters, context, executemany):
    now = time.perf_counter()
    elapsed = now - conn.info.pop("bench_statement_started", now)
    _add("db", elapsed)
    _count("sql")
    timings = _timings.get()
    if timings is not None and statement.lstrip()[:6].upper() in WRITES:
        timings["write"] = timings.get("write", 0.0) + elapsed
        timings.setdefault("first_write_at", now - elapsed)


_do_commit, _do_rollback = DefaultDialect.do_commit, DefaultDialect.do_rollback


def _do_commit_timed(self, dbapi_connection):
    started = time.perf_counter()
    try:
        return _do_commit(self, dbapi_connection)
    finally:
        _transaction_ends(started)
        _add("commit", time.perf_counter() - started)


def _do_rollback_timed(self, dbapi_connection):
    started = time.perf_counter()
    try:
        return _do_rollback(self, dbapi_connection)
    finally:
        _transaction_ends(started)


def _transaction_ends(started: float) -> None:
    now = time.perf_counter()
    _add("db", now - started)
    timings = _timings.get()
    if timings is not None and "first_write_at" in timings:
        timings["held"] = timings.get("held", 0.0) + now - timings.pop("first_write_at")


# ----------------------------------------------------------------------------- the ASGI layer

class ServerTiming:
    """Pure ASGI middleware: starts the request's timings and adds the Server-Timing header."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        timings: dict = {}
        token = _timings.set(timings)
        started = time.perf_counter()

        async def send_with_timing(message):
            if message["type"] == "http.response.start":
                timings["total"] = time.perf_counter() - started
                header = ", ".join([*(f"{name};dur={1000 * timings.get(name, 0.0):.2f}" for name in TIMES),
                                    *(f"{name};dur={timings.get(name, 0)}" for name in COUNTS)])
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"server-timing", header.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_timing)
        finally:
            _timings.reset(token)


def create_app():
    """The workbench app (settings from the environment), timed."""
    import db.users
    import web.auth
    import web.services.labeling
    from web.app import create_app as create_workbench_app

    event.listen(Pool, "connect", lambda dbapi_connection, record: _count("connects"))
    event.listen(Engine, "before_cursor_execute", _statement_starts)
    event.listen(Engine, "after_cursor_execute", _statement_ends)
    anyio.to_thread.run_sync = _run_sync_timed
    DefaultDialect.do_commit, DefaultDialect.do_rollback = _do_commit_timed, _do_rollback_timed
    Pool.connect = _timed(Pool.connect, "pool")
    web.auth.check_password = _timed(web.auth.check_password, "auth")
    db.users.authenticate = _timed(db.users.authenticate, "bcrypt")
    web.services.labeling.progress = _timed(web.services.labeling.progress, "progress")
    return ServerTiming(create_workbench_app())
