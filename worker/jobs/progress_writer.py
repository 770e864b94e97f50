"""Write a job's metrics, log lines and progress from a background thread, so training never waits
on the database.

A training step that wrote its metrics itself would stall for as long as the database is busy: up
to SQLite's 30 s busy timeout per write while another process holds the write lock (a backup, a
long migration, a batch import). `ProgressWriter` takes the records in a bounded in-memory queue
instead and one thread writes them, in order, in batches of up to `BATCH_MAX` records per
transaction. A batch that fails (a locked or restarting database) is rolled back and retried with
back-off until it is written, so no record is lost while the process lives. Only three things
wait for the thread:

  - `flush()`, which the runner calls when the handler returns, before recording the outcome (so
    the job's metrics and log are complete when it shows as finished);
  - `put` when the queue is full (`QUEUE_MAX` records: hours of metrics): memory stays bounded;
  - `close()`, which flushes and ends the thread.

Progress updates are fenced by the attempt number, as every write of a running job is.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from sqlalchemy import update

from db.models import Job, JobLog, Metric

logger = logging.getLogger(__name__)

QUEUE_MAX = 100_000
BATCH_MAX = 500
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


@dataclass(frozen=True)
class MetricRecord:
    step: int
    values: dict[str, float]


@dataclass(frozen=True)
class LogRecord:
    line: str


@dataclass(frozen=True)
class ProgressRecord:
    progress: float


Record = MetricRecord | LogRecord | ProgressRecord


class ProgressWriter:
    """The background writer of attempt `attempt` of job `job_id`; start it, `put` records, `close()` it."""

    def __init__(self, job_id: int, attempt: int, database_url: str | None = None,
                 queue_max: int = QUEUE_MAX):
        self.job_id = job_id
        self.attempt = attempt
        self.database_url = database_url
        self._queue: queue.Queue[Record | None] = queue.Queue(maxsize=queue_max)
        self._thread = threading.Thread(target=self._run, name=f"progress-writer-job-{job_id}", daemon=True)
        self.written = 0  # records written so far (for tests and logs)
        self.failed_batches = 0  # batches that had to be retried

    def start(self) -> "ProgressWriter":
        self._thread.start()
        return self

    def put(self, record: Record) -> None:
        """Queue one record; returns at once unless the queue is full (or the writer is closed: then
        the record is written here and now)."""
        if not self._thread.is_alive():
            self._write_now(record)
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            logger.warning("job %s: %s records wait for the database; training waits for room",
                           self.job_id, self._queue.maxsize)
            self._queue.put(record)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued so far is written; False if `timeout` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # `join` has no timeout: watch unfinished_tasks instead, which task_done counts down.
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if not self._thread.is_alive():
                    return False
                self._queue.all_tasks_done.wait(timeout=1.0 if remaining is None else min(1.0, remaining))
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then end the thread; returns whether everything was written."""
        if not self._thread.is_alive():
            return self._queue.unfinished_tasks == 0
        flushed = self.flush(timeout)
        self._queue.put(None)
        self._thread.join(timeout=5)
        return flushed

    def _write_now(self, record: Record) -> None:
        from db.session import SessionLocal

        with SessionLocal(self.database_url) as session:
            try:
                self._write(session, [record])
            except Exception as error:
                session.rollback()
                logger.warning("job %s: could not write progress to the database: %s", self.job_id, error)

    # -- the thread

    def _run(self) -> None:
        from db.session import SessionLocal

        session = SessionLocal(self.database_url)
        try:
            while True:
                batch = [self._queue.get()]
                while len(batch) < BATCH_MAX:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = None in batch  # close(): the end, after everything queued before it
                records = [record for record in batch if record is not None]
                if records:
                    self._write_until_done(session, records)
                for _ in batch:
                    self._queue.task_done()
                if stop:
                    return
        finally:
            session.close()

    def _write_until_done(self, session, records: list[Record]) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                self._write(session, records)
                self.written += len(records)
                return
            except Exception as error:  # locked, restarting, connection lost: keep the batch, try again
                session.rollback()
                self.failed_batches += 1
                logger.warning("job %s: %s progress record(s) not written yet (%s); retrying in %.1f s",
                               self.job_id, len(records), error, delay)
                time.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)

    def _write(self, session, records: list[Record]) -> None:
        progress = None
        for record in records:
            if isinstance(record, MetricRecord):
                session.add_all(Metric(job_id=self.job_id, step=record.step, name=name, value=value)
                                for name, value in record.values.items())
            elif isinstance(record, LogRecord):
                session.add(JobLog(job_id=self.job_id, line=record.line))
            else:
                progress = record.progress  # only the latest matters
        if progress is not None:
            session.execute(update(Job).where(Job.id == self.job_id, Job.attempts == self.attempt)
                            .values(progress=progress))
        session.commit()


class DirectWriter(ProgressWriter):
    """The same `put` without a thread: each record is written at once (logged, not raised, when the
    database refuses). For contexts built outside the runner (tests, one-off scripts), whose callers
    read the rows right after the handler returns."""

    def put(self, record: Record) -> None:
        self._write_now(record)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> bool:
        return True
