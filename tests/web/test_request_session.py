"""The per-request database session (`web.auth.get_db_session`): made without a pool thread, and given
back even when every pool thread is busy.

Requests queued for the thread pool may be waiting for a database connection; if giving a connection back
also queued for a pool thread, a full pool would wait on itself until the connection pool's timeout.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import anyio
import pytest
from sqlalchemy import text

from web.auth import get_db_session


def _request_for(database_url: str) -> SimpleNamespace:
    """What the dependency reads of a request: the app's settings."""
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(
        database_url=database_url))))


def test_a_requests_session_is_given_back_while_every_pool_thread_is_busy(tmp_path):
    request = _request_for(f"sqlite:///{tmp_path / 'session.db'}")
    busy = threading.Event()
    release = threading.Event()
    seen: dict = {}

    def hold_a_pool_thread() -> None:
        busy.set()
        release.wait(15)  # released once the session is closed, or after 15 s if closing waited for this thread

    async def main() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(anyio.to_thread.run_sync, hold_a_pool_thread)
            while not busy.is_set():
                await anyio.sleep(0.01)
            dependency = get_db_session(request)
            session = await dependency.__anext__()  # made on the event loop: the busy pool does not matter
            seen["answer"] = session.execute(text("select 1")).scalar_one()
            seen["in_transaction_before"] = session.in_transaction()
            started = time.monotonic()
            try:
                with pytest.raises(StopAsyncIteration):
                    await dependency.__anext__()  # the request ends: close, with the pool still full
            finally:
                release.set()
            seen["closed_without_waiting"] = time.monotonic() - started < 5
            seen["in_transaction_after"] = session.in_transaction()

    anyio.run(main)
    assert seen == {"answer": 1, "in_transaction_before": True, "closed_without_waiting": True,
                    "in_transaction_after": False}


def test_a_committed_session_is_closed_on_the_event_loop_and_holds_no_connection(tmp_path, monkeypatch):
    """A request that ends with a commit (a label) has given its connection back already: closing it needs no
    pool thread, and a request with a transaction still open is closed in one, as before."""
    from db.session import get_engine

    url = f"sqlite:///{tmp_path / 'session.db'}"
    request = _request_for(url)
    threads_used: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def recording_run_sync(function, *args, **kwargs):
        threads_used.append(getattr(function, "__name__", repr(function)))
        return await run_sync(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", recording_run_sync)

    async def one_request(commit: bool) -> tuple[bool, int]:
        dependency = get_db_session(request)
        session = await dependency.__anext__()
        session.execute(text("create table if not exists t (x integer)"))
        session.execute(text("insert into t values (1)"))
        if commit:
            session.commit()
        held = get_engine(url, lock_timeout_seconds=5).pool.checkedout()
        with pytest.raises(StopAsyncIteration):
            await dependency.__anext__()
        return session.in_transaction(), held

    assert anyio.run(one_request, True) == (False, 0) and threads_used == []
    assert anyio.run(one_request, False) == (False, 1) and threads_used == ["close"]
