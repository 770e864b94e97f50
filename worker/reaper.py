"""The reaper: running jobs whose worker died go back to the queue and resume from a checkpoint.

A worker killed with `kill -9` (or an OOM kill, a lost machine) stops stamping heartbeats. Its
late-acked message would come back only after the broker's visibility timeout (an hour on Redis),
and even then finds the job `running`; so the database decides instead: a running job whose
`heartbeat_at` is older than `stale_after_seconds` is put back to `queued` and re-enqueued. Its run
directory is kept, so training resumes from the last checkpoint.

Every worker runs the reaper in a thread, and so does `workbench serve`; they may all look at the
same job at once, which is safe because each requeue is a conditional UPDATE that re-checks the
stale heartbeat and the attempt number, so only one reaper wins and a job that just beat again is
left alone.

A job whose worker keeps dying (a model too big for memory) would otherwise loop forever; after
`MAX_LOST_ATTEMPTS` lost workers it is marked failed instead. A job whose cancel was requested
before its worker died is marked cancelled rather than restarted.

Clocks: heartbeats are stamped with the worker's clock and compared with the reaper's, so hosts
must keep their clocks in sync (NTP) to well within `stale_after_seconds`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from db.models import Job, JobLog, JobStatus, utcnow
from db.settings import Settings, get_settings

logger = logging.getLogger(__name__)

MAX_LOST_ATTEMPTS = 3
LOST_WORKER_NOTE = "worker lost"  # JobLog lines starting with this count the lost attempts


def _lost_count(session: Session, job_id: int) -> int:
    return session.scalar(select(func.count()).select_from(JobLog)
                          .where(JobLog.job_id == job_id, JobLog.line.startswith(LOST_WORKER_NOTE))) or 0


def reap_stale_jobs(session: Session, stale_after_seconds: float, *,
                    requeue: Callable[[int], object] | None = None) -> list[int]:
    """Take back running jobs whose heartbeat is older than `stale_after_seconds`.

    Returns the ids of the jobs put back to queued (they are also re-enqueued through
    `requeue`, default `worker.jobs.enqueue`, after the commit). Jobs that had a cancel request
    become cancelled; jobs lost too often become failed; neither is in the returned list.
    """
    if requeue is None:
        from worker.jobs import enqueue as requeue

    now = utcnow()
    cutoff = now - timedelta(seconds=stale_after_seconds)
    # A running job without any heartbeat (claimed, then the worker died before its first beat)
    # is judged by when it started.
    is_stale = or_(Job.heartbeat_at < cutoff, and_(Job.heartbeat_at.is_(None), Job.started_at < cutoff))
    stale = session.execute(
        select(Job.id, Job.attempts, Job.cancel_requested, Job.worker_host, Job.heartbeat_at)
        .where(Job.status == JobStatus.running, is_stale)
        .order_by(Job.id)
    ).all()

    requeued: list[int] = []
    for job_id, attempts, cancel_requested, worker_host, heartbeat_at in stale:
        lost_before = _lost_count(session, job_id)
        if cancel_requested:
            status, note = JobStatus.cancelled, "its cancel was requested, so it is cancelled"
        elif lost_before + 1 >= MAX_LOST_ATTEMPTS:
            status, note = JobStatus.failed, f"lost {lost_before + 1} workers; giving up"
        else:
            status, note = JobStatus.queued, "requeued; it resumes from its last checkpoint"
        values = {"status": status, "worker_host": None, "heartbeat_at": None}
        if status.finished:
            values["finished_at"] = now
        if status == JobStatus.failed:
            values["error"] = (f"the worker running this job stopped responding {lost_before + 1} times "
                               f"(killed, out of memory, or the machine went away)")
        # Conditional: another reaper may have taken it, or the worker may have just beaten again.
        won = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.running,
                              Job.attempts == attempts, is_stale)
            .values(**values)
        ).rowcount
        if not won:
            continue
        last_seen = heartbeat_at.isoformat(timespec="seconds") if heartbeat_at else "never"
        session.add(JobLog(job_id=job_id, line=(
            f"{LOST_WORKER_NOTE}: {worker_host or 'its worker'} sent no heartbeat for "
            f"{stale_after_seconds:g}s (last {last_seen}, attempt {attempts}); {note}")))
        if status == JobStatus.queued:
            requeued.append(job_id)
    session.commit()
    # After the commit, so a worker receiving the message sees the job queued.
    for job_id in requeued:
        requeue(job_id)
    if stale:
        logger.info("reaper: %s stale running job(s), requeued %s", len(stale), requeued)
    return requeued


class ReaperThread(threading.Thread):
    """Runs `reap_stale_jobs` every `interval_s` until `stop()`; errors are logged, not raised."""

    def __init__(self, stale_after_seconds: float, interval_s: float, database_url: str | None = None):
        super().__init__(name="workbench-reaper", daemon=True)
        self.stale_after_seconds = stale_after_seconds
        self.interval_s = interval_s
        self.database_url = database_url
        self._stop_event = threading.Event()

    def run(self) -> None:
        from db.session import session_scope

        # Wait one interval first: a restarted worker should not steal a job whose old worker is
        # only a moment late, and tests get a predictable first sweep.
        while not self._stop_event.wait(self.interval_s):
            try:
                with session_scope(self.database_url) as session:
                    reap_stale_jobs(session, self.stale_after_seconds)
            except Exception:  # the database may be restarting; try again next round
                logger.exception("reaper sweep failed")

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=timeout)


def start_reaper_thread(settings: Settings | None = None, interval_s: float | None = None) -> ReaperThread:
    """Start a daemon thread that reaps stale jobs every `stale_after / 2` seconds; returns it.

    Called by every worker (`worker.main.run_worker`) and by `workbench serve`.
    """
    settings = settings or get_settings()
    if interval_s is None:
        interval_s = max(1.0, settings.stale_after_seconds / 2)
    thread = ReaperThread(settings.stale_after_seconds, interval_s, database_url=settings.database_url)
    thread.start()
    return thread
