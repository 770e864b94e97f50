"""Heartbeats and stop flags for the job a worker is running.

While a job runs, `JobHeartbeat` (a daemon thread) stamps `jobs.heartbeat_at` every
`heartbeat_seconds` and copies the job's `cancel_requested` column into a `threading.Event`.
The training loop's `should_stop()` only reads events, so checking it every step costs nothing
and never touches the database. Three things make a job stop:

  - `cancelled`: a user asked (`cancel_requested` became true);
  - `lost`: the row no longer belongs to this attempt (a reaper took the job back after our
    heartbeats stopped reaching the database, and another worker may already run it), so this
    worker must stop writing and leave the job alone;
  - worker shutdown: Celery's warm shutdown (SIGTERM) on this worker; the job checkpoints and
    goes back to the queue (see `worker.runtime.celery_app`).

The thread uses its own short sessions: a SQLAlchemy session is not thread-safe, and the job's
own session is busy writing metrics.

Workers' own presence records (what /api/health and the fit check read) are `worker.jobs.presence`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from datetime import datetime, timezone

from sqlalchemy import select, update

from db.models import Job, JobStatus, utcnow
from worker.jobs.presence import stamp_job_beat

logger = logging.getLogger(__name__)

# Set when this worker process is shutting down (Celery's worker_shutting_down signal). A prefork worker shares
# it with its pool children (`share_shutdown_flag`), so the signal, which Celery sends in the parent, reaches them.
_worker_shutdown = threading.Event()
_jobs_running = 0  # JobHeartbeats active in this process (a prefork child's SIGTERM handler asks, see tasks.py)


def share_shutdown_flag() -> None:
    """Make the shutdown flag one that processes forked from now on share (call in a prefork worker's parent,
    before its pool starts): setting it in the parent stops the jobs its children run."""
    import multiprocessing

    global _worker_shutdown
    _worker_shutdown = multiprocessing.get_context("fork").Event()


def request_worker_shutdown() -> None:
    """Ask the job running in this process to checkpoint and stop, because the worker is stopping."""
    _worker_shutdown.set()


def worker_shutdown_requested() -> bool:
    return _worker_shutdown.is_set()


def job_running() -> bool:
    """Whether a job runs in this process now (between its heartbeat's start and stop)."""
    return _jobs_running > 0


class JobHeartbeat:
    """Stamp heartbeats for attempt `attempt` of job `job_id` and watch its cancel flag.

    Use as a context manager around the job's work::

        with JobHeartbeat(job.id, job.attempts, settings.heartbeat_seconds) as heartbeat:
            pretrain(..., should_stop=heartbeat.should_stop)
    """

    def __init__(self, job_id: int, attempt: int, interval_s: float, database_url: str | None = None,
                 broker_url: str | None = None, queue: str | None = None, stale_after_seconds: float | None = None):
        self.job_id = job_id
        self.attempt = attempt
        self.interval_s = interval_s
        self.database_url = database_url
        # Beats also go to the broker (worker.jobs.presence.stamp_job_beat): when the database is stalled
        # the reaper sees there that this attempt is alive and leaves it alone.
        self.broker_url = broker_url
        self.queue = queue
        self.stale_after_seconds = stale_after_seconds or 10 * interval_s
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-job-{job_id}", daemon=True)

    # -- what the job reads

    def should_stop(self) -> bool:
        """True when the job must checkpoint and stop (cancelled, lost, or worker shutting down)."""
        return self.cancelled.is_set() or self.lost.is_set() or _worker_shutdown.is_set()

    @property
    def stop_reason(self) -> str | None:
        if self.lost.is_set():
            return "lost"
        if self.cancelled.is_set():
            return "cancelled"
        if _worker_shutdown.is_set():
            return "shutdown"
        return None

    # -- lifecycle

    def start(self) -> "JobHeartbeat":
        global _jobs_running
        self.beat()  # pick up a cancel that arrived between the claim and now
        self._thread.start()
        _jobs_running += 1
        return self

    def stop(self) -> None:
        global _jobs_running
        _jobs_running = max(0, _jobs_running - 1)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(5.0, 2 * self.interval_s))

    def __enter__(self) -> "JobHeartbeat":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def beat(self) -> None:
        """One heartbeat: stamp heartbeat_at (fenced by attempt) and read cancel_requested; and the broker's
        beat, which does not depend on the database answering."""
        from db.session import session_scope

        if self.broker_url and self.queue and not self.lost.is_set():
            stamp_job_beat(self.broker_url, self.queue, self.job_id, self.attempt, ttl_s=2 * self.stale_after_seconds)
        try:
            with session_scope(self.database_url) as session:
                # Fenced: only while the job is running *this* attempt. If the update matches no row,
                # the job was taken away from us (reaped and reclaimed, or finished elsewhere).
                stamped = session.execute(
                    update(Job).where(Job.id == self.job_id, Job.attempts == self.attempt,
                                      Job.status == JobStatus.running)
                    .values(heartbeat_at=utcnow())
                ).rowcount
                cancel_requested = session.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
        except Exception as error:  # a DB hiccup must not kill the job; the next beat tries again
            logger.warning("heartbeat for job %s failed: %s", self.job_id, error)
            return
        if not stamped:
            if not self.lost.is_set():
                logger.warning("job %s attempt %s is no longer ours; stopping it", self.job_id, self.attempt)
            self.lost.set()
        if cancel_requested:
            self.cancelled.set()


# ----------------------------------------------------------------------------- worker presence
