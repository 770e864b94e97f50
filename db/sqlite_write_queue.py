"""SQLite writers of one process wait their turn on a lock of their own, not in SQLite's busy handler.

SQLite lets one connection write at a time. A connection that finds the write lock taken waits in
SQLite's busy handler, which sleeps and retries (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 ms, then 100 ms
at a time) instead of being woken when the lock is free. Under load that is a convoy: a writer that
started waiting just after another took the lock sleeps past that one's commit, newer writers get in
ahead of it, and it sleeps again. With 50 labelers (bench/bench_labeling.py) the slowest 1% of labels
waited 300-700 ms for a lock that each writer held ~10 ms.

So the connections `create_workbench_engine` makes for a SQLite file are `QueuedWriteConnection`s (the
`factory` of `sqlite3.connect`): before its transaction's first write a connection takes a
`threading.Lock` shared by every connection of this process to that file, and it lets it go when the
transaction ends (commit, rollback, close, or a statement after which no transaction is open). A waiting
writer is woken the moment the lock is free. Waiting is bounded like SQLite's: after the connection's
`timeout` the write fails with "database is locked", as SQLite's own would.

This only orders the writers of one process, which is where the contention is (the web app's request
threads). SQLite's lock still guards the database: writers in other processes (workers) wait for it in
the busy handler as before, and nothing here is needed for correctness, only for who goes next.
"""

from __future__ import annotations

import os
import sqlite3
import threading

# Statements that take SQLite's write lock when they start a transaction (pysqlite begins one before them).
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def write_lock_of(database: str) -> threading.Lock:
    """The lock this process's writers of `database` (a path, or a URI as given) take turns on."""
    key = database if database.startswith("file:") else os.path.realpath(database)
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _forget_locks_after_fork() -> None:
    # A lock held by one of the parent's threads at the fork would never be released in the child.
    global _locks_guard
    _locks_guard = threading.Lock()
    _locks.clear()


os.register_at_fork(after_in_child=_forget_locks_after_fork)


def _is_write(statement: str) -> bool:
    return statement.lstrip()[:7].upper().startswith(_WRITES)


class QueuedWriteConnection(sqlite3.Connection):
    """A pysqlite connection whose transactions take this process's write lock of the file before writing."""

    def __init__(self, database, *args, **kwargs):
        super().__init__(database, *args, **kwargs)
        # sqlite3.connect's second positional parameter is `timeout` (default 5 s).
        self.write_wait_seconds = float(kwargs.get("timeout", args[0] if args else 5.0))
        self._write_lock = write_lock_of(os.fsdecode(database))
        self.holds_write_lock = False

    def cursor(self, factory=None):
        return super().cursor(factory or _QueuedWriteCursor)

    # sqlite3's shortcuts make their cursor in C, past `cursor` above; these go through it.
    def execute(self, statement, parameters=()):
        return self.cursor().execute(statement, parameters)

    def executemany(self, statement, parameters):
        return self.cursor().executemany(statement, parameters)

    def before_statement(self, statement: str) -> None:
        if self.holds_write_lock or not _is_write(statement):
            return
        if not self._write_lock.acquire(timeout=self.write_wait_seconds):
            raise sqlite3.OperationalError("database is locked")
        self.holds_write_lock = True

    def after_statement(self) -> None:
        # No transaction open after a write: it ran in autocommit mode, or it ended one (RELEASE of an
        # outermost savepoint); either way nothing of ours holds SQLite's lock any more.
        if self.holds_write_lock and not self.in_transaction:
            self._release()

    def _release(self) -> None:
        if self.holds_write_lock:
            self.holds_write_lock = False
            self._write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            if not self.in_transaction:
                self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            if not self.in_transaction:
                self._release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()

    def __del__(self) -> None:
        # A connection dropped without close() (SQLite rolls it back) must not keep the lock forever.
        if getattr(self, "holds_write_lock", False):
            self._release()


class _QueuedWriteCursor(sqlite3.Cursor):
    def execute(self, statement, parameters=()):
        self.connection.before_statement(statement)
        try:
            return super().execute(statement, parameters)
        finally:
            self.connection.after_statement()

    def executemany(self, statement, parameters):
        self.connection.before_statement(statement)
        try:
            return super().executemany(statement, parameters)
        finally:
            self.connection.after_statement()
