"""Metrics and log lines are written by a background thread: a locked database never stalls training.

A process holds SQLite's write lock (BEGIN EXCLUSIVE) for a few seconds while a job's training loop
reports a metric every step through its JobContext. Every step's call must return at once (before,
each write waited up to the 30 s busy timeout), steps keep going while the lock is held, and once the
lock is gone and the writer flushed, every metric and log line is in the database, in order.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from db.models import Job, JobLog, JobStatus, Metric
from tests.conftest import StopOnQuestion
from worker.jobs.progress_writer import ProgressWriter
from worker.runtime.runner import _make_context

LOCK_SECONDS = 3.0


def hold_write_lock(database_path: str, seconds: float, locked: threading.Event, seen: dict) -> None:
    """Hold the write lock for `seconds`; `seen["losses"]`: loss rows written when it is released."""
    connection = sqlite3.connect(database_path, timeout=30, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(seconds)
        seen["losses"] = connection.execute("SELECT count(*) FROM metrics WHERE name = 'loss'").fetchone()[0]
        connection.execute("COMMIT")
    finally:
        connection.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_training_keeps_stepping_while_the_database_is_locked_and_loses_no_metric(workbench_env, session):
    row = Job(kind="pretrain", status=JobStatus.running, params={}, attempts=1)
    session.add(row)
    session.commit()
    writer = ProgressWriter(row.id, 1, workbench_env.database_url).start()
    ctx = _make_context(session, row.id, 1, workbench_env, StopOnQuestion(10 ** 6), writer)

    locked, seen = threading.Event(), {}
    locker = threading.Thread(target=hold_write_lock,
                              args=(make_url(workbench_env.database_url).database, LOCK_SECONDS, locked, seen))
    steps, slowest_call, steps_while_locked = 200, 0.0, 0
    for step in range(1, steps + 1):
        if step == 20:
            locker.start()
            assert locked.wait(10)
            lock_ends = time.monotonic() + LOCK_SECONDS
        started = time.monotonic()
        ctx.on_metrics({"step": step, "loss": 1.0 / step, "lr": 1e-3, "progress": step / steps})
        if step % 50 == 0:
            ctx.log(f"step {step}")
        slowest_call = max(slowest_call, time.monotonic() - started)
        if step >= 20 and time.monotonic() < lock_ends:
            steps_while_locked += 1
        time.sleep(0.02)  # the step's own work
    locker.join()

    assert slowest_call < 0.5, f"a metrics call blocked the training loop for {slowest_call:.2f}s"
    assert steps_while_locked >= 50  # ~3 s of 20 ms steps went on under the lock
    assert seen["losses"] <= 20  # the lock was real: nothing reported under it had been written
    assert writer.close(timeout=60)

    session.expire_all()
    loss_steps = list(session.scalars(select(Metric.step).where(Metric.job_id == row.id, Metric.name == "loss")
                                      .order_by(Metric.id)))
    assert loss_steps == list(range(1, steps + 1))
    assert session.scalar(select(Job.progress).where(Job.id == row.id)) == 1.0
    lines = list(session.scalars(select(JobLog.line).where(JobLog.job_id == row.id).order_by(JobLog.id)))
    assert lines == [f"step {n}" for n in (50, 100, 150, 200)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_progress_of_an_older_attempt_is_not_written(workbench_env, session):
    row = Job(kind="pretrain", status=JobStatus.running, params={}, attempts=2, progress=0.1)
    session.add(row)
    session.commit()
    writer = ProgressWriter(row.id, 1, workbench_env.database_url).start()  # attempt 1 was reaped
    ctx = _make_context(session, row.id, 1, workbench_env, StopOnQuestion(10 ** 6), writer)
    ctx.set_progress(0.9)
    assert writer.close(timeout=30)
    session.expire_all()
    assert session.get(Job, row.id).progress == 0.1
    ctx.log("a line after the writer closed")  # written at once rather than lost or raised
    assert session.scalars(select(JobLog.line).where(JobLog.job_id == row.id)).all() == [
        "a line after the writer closed"]
