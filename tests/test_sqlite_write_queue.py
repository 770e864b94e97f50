"""SQLite writers of one process take turns on a lock of their own (db/sqlite_write_queue.py): held from a
transaction's first write to its end, handed to the next writer at once, bounded by the connection's timeout,
and fresh in a forked child."""

from __future__ import annotations

import multiprocessing
import sqlite3
import statistics
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.session import create_workbench_engine
from db.sqlite_write_queue import QueuedWriteConnection, write_lock_of


@pytest.fixture
def path(tmp_path: Path) -> str:
    database = str(tmp_path / "queue.db")
    with sqlite3.connect(database) as setup:
        setup.execute("PRAGMA journal_mode = WAL")
        setup.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    return database


def connect(path: str, timeout: float = 10.0) -> QueuedWriteConnection:
    return sqlite3.connect(path, timeout=timeout, factory=QueuedWriteConnection, check_same_thread=False)


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_the_lock_is_held_from_the_first_write_to_the_end_of_the_transaction(path: str, end: str) -> None:
    lock = write_lock_of(path)
    connection = connect(path)
    connection.execute("SELECT count(*) FROM t").fetchone()
    assert not lock.locked() and not connection.holds_write_lock  # reads take no turn
    connection.execute("INSERT INTO t VALUES (1)")
    connection.execute("UPDATE t SET x = 2 WHERE x = 1")
    assert lock.locked() and connection.holds_write_lock and connection.in_transaction
    getattr(connection, end)()
    assert not lock.locked()
    connection.close()


def test_a_write_outside_a_transaction_lets_the_lock_go_at_once(path: str) -> None:
    connection = connect(path)
    connection.isolation_level = None  # autocommit: each statement is its own transaction
    connection.execute("INSERT INTO t VALUES (1)")
    assert not connection.holds_write_lock and not write_lock_of(path).locked()
    connection.close()


def test_the_next_writer_gets_in_as_soon_as_the_lock_is_free(path: str) -> None:
    """SQLite's busy handler would poll (sleeps growing to 100 ms, ~30 ms late on average at this point); a
    writer waiting on the queue's lock starts the moment the holder commits."""
    holder, waiter = connect(path), connect(path)
    gaps = []
    for round_number in range(5):
        holder.execute("INSERT INTO t VALUES (?)", (2 * round_number,))
        wrote_at: list[float] = []
        thread = threading.Thread(target=lambda: (waiter.execute("INSERT INTO t VALUES (?)", (2 * round_number + 1,)),
                                                  wrote_at.append(time.perf_counter())))
        thread.start()
        time.sleep(0.3)
        assert thread.is_alive() and not wrote_at  # it waits while the other holds the lock
        committed_at = time.perf_counter()
        holder.commit()
        thread.join(timeout=10)
        waiter.commit()
        gaps.append(wrote_at[0] - committed_at)
    assert holder.execute("SELECT count(*) FROM t").fetchone()[0] == 10
    # 10 ms: ten times what a handover takes here, and under the busy handler's sleeps at 300 ms of waiting.
    assert statistics.median(gaps) < 0.010, gaps
    holder.close()
    waiter.close()


def test_waiting_is_bounded_by_the_connection_timeout(path: str) -> None:
    holder, waiter = connect(path), connect(path, timeout=0.3)
    holder.execute("INSERT INTO t VALUES (1)")
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        waiter.execute("INSERT INTO t VALUES (2)")
    assert 0.25 < time.monotonic() - started < 5
    assert not waiter.holds_write_lock and not waiter.in_transaction
    holder.commit()
    waiter.execute("INSERT INTO t VALUES (2)")  # and it can write once the lock is free
    waiter.commit()
    assert sorted(x for (x,) in holder.execute("SELECT x FROM t")) == [1, 2]
    holder.close()
    waiter.close()


def test_each_database_file_has_its_own_lock(path: str, tmp_path: Path) -> None:
    assert write_lock_of(path) is write_lock_of(str(Path(path).parent / "." / Path(path).name))
    assert write_lock_of(path) is not write_lock_of(str(tmp_path / "other.db"))


def test_workbench_engines_queue_sqlite_file_writers_and_a_failed_write_lets_go(path: str) -> None:
    engine = create_workbench_engine(f"sqlite:///{path}")
    with Session(engine) as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        connection = session.connection().connection.dbapi_connection
        assert isinstance(connection, QueuedWriteConnection) and connection.holds_write_lock
        session.commit()
        assert not write_lock_of(path).locked()
        with pytest.raises(IntegrityError):
            session.execute(text("INSERT INTO t VALUES (1)"))
        session.rollback()
        assert not write_lock_of(path).locked()
    engine.dispose()
    memory = create_workbench_engine("sqlite://")  # one shared connection, no other writer to wait for
    with memory.connect() as connection:
        assert not isinstance(connection.connection.dbapi_connection, QueuedWriteConnection)
    memory.dispose()


def _try_the_lock_in_child(path: str, results) -> None:
    results.put(write_lock_of(path).acquire(timeout=0))


def test_a_forked_child_does_not_inherit_a_held_lock(path: str) -> None:
    holder = connect(path)
    holder.execute("INSERT INTO t VALUES (1)")
    results = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_try_the_lock_in_child, args=(path, results))
    child.start()
    try:
        assert results.get(timeout=60) is True
    finally:
        child.join(timeout=30)
        holder.rollback()
        holder.close()
    assert child.exitcode == 0
