"""The reaper: jobs whose worker died go back to the queue, and queued jobs whose message was lost
are sent again.

Three duties, all decided by the database (the source of truth), all safe to run from several
processes at once because every change is a conditional UPDATE whose rowcount says who won:

  - `reap_stale_jobs`: a worker killed with `kill -9` (or a lost machine) stops stamping
    heartbeats. Its late-acked message would come back only after the broker's visibility timeout
    (an hour on Redis), so a running job whose `heartbeat_at` is older than `stale_after_seconds`
    is put back to `queued` and re-sent; its run directory is kept, so training resumes from the
    last checkpoint. `reap_jobs_of_dead_worker` does the same at once for a worker known to be dead
    (`workbench serve` saw its process exit).
  - `resend_lost_messages`: a queued job that no worker has claimed for `resend_after_seconds` and
    whose run_job message is not waiting in the broker (Redis was restarted and lost it, or it was
    published while nothing listened) gets a new message. Duplicates are harmless: a message that
    finds no queued job does nothing (see `worker.jobs.lifecycle.claim_next_job`).
  - `fail_killed_job`: the pool child running a job was killed by the kernel (out of memory, see
    `worker.runtime.tasks.RunJobRequest`); resuming would only be killed again, so the job fails and is
    marked not resumable.

A job whose worker keeps dying would otherwise loop forever; after `MAX_LOST_ATTEMPTS` lost workers
it is marked failed instead. A job whose cancel was requested before its worker died is marked
cancelled rather than restarted. Each change is recorded with `record_event` (user None: the system).

Clocks: heartbeats are stamped with the worker's clock and compared with the reaper's, so hosts
must keep their clocks in sync (NTP) to well within `stale_after_seconds`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from db.models import Job, JobEvent, JobLog, JobStatus, utcnow
from db.settings import Settings, get_settings
from worker.jobs.lifecycle import record_event
from worker.jobs.messages import broker_url_of, job_queue_of
from worker.jobs.presence import jobs_beating

logger = logging.getLogger(__name__)

MAX_LOST_ATTEMPTS = 3
LOST_WORKER_NOTE = "worker lost"  # JobLog lines starting with this count the lost attempts


def _lost_count(session: Session, job_id: int) -> int:
    return session.scalar(select(func.count()).select_from(JobLog)
                          .where(JobLog.job_id == job_id, JobLog.line.startswith(LOST_WORKER_NOTE))) or 0


def _stale_condition(stale_after_seconds: float) -> ColumnElement[bool]:
    cutoff = utcnow() - timedelta(seconds=stale_after_seconds)
    # A running job without any heartbeat (claimed, then the worker died before its first beat)
    # is judged by when it started.
    return or_(Job.heartbeat_at < cutoff, and_(Job.heartbeat_at.is_(None), Job.started_at < cutoff))


def reap_stale_jobs(session: Session, stale_after_seconds: float, *,
                    requeue: Callable[[int], object] | None = None,
                    beating: Callable[[dict[int, int]], set[int]] | None = None) -> list[int]:
    """Take back running jobs whose heartbeat is older than `stale_after_seconds`.

    A job whose attempt still beats in the broker (`beating`, default: `worker.jobs.presence.jobs_beating` on
    the settings' broker) is alive: its database heartbeats failed because the database was stalled or
    locked, and it is left alone (a long database stall must not count as a lost worker).

    Returns the ids of the jobs put back to queued (they are also re-enqueued through
    `requeue`, default `worker.jobs.lifecycle.enqueue`, after the commit). Jobs that had a cancel request
    become cancelled; jobs lost too often become failed; neither is in the returned list.
    """
    if beating is None:
        settings = get_settings()
        broker_url, queue = broker_url_of(settings), job_queue_of(settings)
        beating = lambda attempts: jobs_beating(broker_url, queue, attempts, stale_after_seconds)  # noqa: E731
    return _take_back(session, _stale_condition(stale_after_seconds),
                      f"sent no heartbeat for {stale_after_seconds:g}s", requeue, beating)


def reap_jobs_of_dead_worker(session: Session, node_name: str, *,
                             requeue: Callable[[int], object] | None = None) -> list[int]:
    """Take back at once the running jobs of the Celery node `node_name`, whose process has exited.

    Jobs record `<node name>:<pid>` as their worker_host (see `worker.runtime.runner.job_worker_host`).
    """
    prefix = node_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":"
    return _take_back(session, Job.worker_host.like(prefix + "%", escape="\\"),
                      "exited (its process is gone)", requeue)


def _take_back(session: Session, lost: ColumnElement[bool], how: str,
               requeue: Callable[[int], object] | None,
               beating: Callable[[dict[int, int]], set[int]] | None = None) -> list[int]:
    if requeue is None:
        from worker.jobs.lifecycle import enqueue as requeue

    now = utcnow()
    rows = session.execute(
        select(Job.id, Job.attempts, Job.cancel_requested, Job.worker_host, Job.heartbeat_at)
        .where(Job.status == JobStatus.running, lost).order_by(Job.id)
    ).all()
    if beating is not None and rows:
        alive = beating({row.id: row.attempts for row in rows})
        rows = [row for row in rows if row.id not in alive]

    requeued: list[int] = []
    for job_id, attempts, cancel_requested, worker_host, heartbeat_at in rows:
        lost_before = _lost_count(session, job_id)
        values = {"worker_host": None, "heartbeat_at": None}
        if cancel_requested:
            status, note = JobStatus.cancelled, "its cancel was requested, so it is cancelled"
        elif lost_before + 1 >= MAX_LOST_ATTEMPTS:
            status, note = JobStatus.failed, f"lost {lost_before + 1} workers; giving up"
            values["error"] = (f"the worker running this job stopped responding {lost_before + 1} times "
                               f"(killed, out of memory, or the machine went away)")
        else:
            status, note = JobStatus.queued, "requeued; it resumes from its last checkpoint"
        values["status"] = status
        if status.finished:
            values["finished_at"] = now
        # Conditional: another reaper may have taken it, or the worker may have just beaten again.
        won = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.running, Job.attempts == attempts, lost)
            .values(**values)
        ).rowcount
        if not won:
            continue
        last_seen = heartbeat_at.isoformat(timespec="seconds") if heartbeat_at else "never"
        line = (f"{LOST_WORKER_NOTE}: {worker_host or 'its worker'} {how} "
                f"(last heartbeat {last_seen}, attempt {attempts}); {note}")
        session.add(JobLog(job_id=job_id, line=line))
        record_event(session, job_id, "requeued" if status == JobStatus.queued else status.value, None, line)
        if status == JobStatus.queued:
            requeued.append(job_id)
    session.commit()
    # After the commit, so a worker receiving the message sees the job queued.
    for job_id in requeued:
        requeue(job_id)
    if rows:
        logger.info("reaper: %s lost running job(s) (%s), requeued %s", len(rows), how, requeued)
    return requeued


# ----------------------------------------------------------------------------- killed by the kernel

def killed_reason(detail: str) -> str:
    """The error a person reads for a job whose process got SIGKILL (nearly always the OOM killer)."""
    return f"killed by the operating system (SIGKILL), most likely out of memory: {detail}"


def fail_killed_job(session: Session, worker_host: str, reason: str) -> list[int]:
    """Fail the running job(s) of `worker_host` (one pool process) with `reason`, not resumable.

    Returns the ids failed. Called by the worker's main process when a pool child died under a job.
    """
    job_ids = list(session.scalars(select(Job.id).where(Job.status == JobStatus.running,
                                                        Job.worker_host == worker_host)))
    failed = []
    for job_id in job_ids:
        won = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.running, Job.worker_host == worker_host)
            .values(status=JobStatus.failed, error=reason, resumable=False, finished_at=utcnow(),
                    heartbeat_at=None)
        ).rowcount
        if won:
            session.add(JobLog(job_id=job_id, line=f"failed: {reason}"))
            record_event(session, job_id, "failed", None, reason)
            failed.append(job_id)
    session.commit()
    return failed


# ----------------------------------------------------------------------------- lost messages

def resend_lost_messages(session: Session, resend_after_seconds: float, *,
                         waiting_job_ids: Callable[[], set[int]] | None = None,
                         send: Callable[[int], bool] | None = None) -> list[int]:
    """Send a new message for each job queued longer than `resend_after_seconds` whose message is
    not waiting in the broker; returns their ids. Nothing is sent while the broker is unreachable.

    "Queued since" is the job's latest event (submitted, resumed, requeued, resent), else its
    creation. Defaults: the broker named by the settings, and `worker.jobs.lifecycle.enqueue`.
    """
    if waiting_job_ids is None:
        from worker.runtime.broker_state import waiting_job_ids as read_waiting
        from worker.jobs.messages import job_queue, sending_app

        broker_url = sending_app().conf.broker_url
        # A message a worker received in the last `resend_after_seconds` is about to claim its job.
        waiting_job_ids = lambda: read_waiting(broker_url, job_queue(), resend_after_seconds)  # noqa: E731
    if send is None:
        from worker.jobs.lifecycle import enqueue as send

    cutoff = utcnow() - timedelta(seconds=resend_after_seconds)
    last_event = (select(JobEvent.job_id, func.max(JobEvent.created_at).label("at"))
                  .group_by(JobEvent.job_id).subquery())
    queued_since = func.coalesce(last_event.c.at, Job.created_at)
    overdue = list(session.scalars(
        select(Job.id).outerjoin(last_event, last_event.c.job_id == Job.id)
        .where(Job.status == JobStatus.queued, queued_since < cutoff)
        .order_by(Job.priority.desc(), Job.id)))
    session.commit()  # end the read transaction before talking to the broker
    if not overdue:
        return []
    try:
        waiting = waiting_job_ids()
    except Exception as error:  # the broker is down: nothing could be sent anyway; try next sweep
        logger.info("reaper: %s job(s) queued for over %gs, but the broker is unreachable (%s); "
                    "they are re-sent once it answers", len(overdue), resend_after_seconds, error)
        return []
    resent = []
    for job_id in overdue:
        if job_id in waiting or not send(job_id):
            continue
        record_event(session, job_id, "resent", None,
                     f"queued for over {resend_after_seconds:g}s with no message waiting in the broker")
        session.add(JobLog(job_id=job_id, line="its message was no longer in the broker (restarted?); sent again"))
        resent.append(job_id)
    session.commit()
    if resent:
        logger.info("reaper: re-sent the lost message(s) of queued job(s) %s", resent)
    return resent


# ----------------------------------------------------------------------------- the thread

class ReaperThread(threading.Thread):
    """Runs the reaper's sweeps every `interval_s` until `stop()`; errors are logged, not raised."""

    def __init__(self, stale_after_seconds: float, interval_s: float, database_url: str | None = None,
                 resend_after_seconds: float | None = None):
        super().__init__(name="workbench-reaper", daemon=True)
        self.stale_after_seconds = stale_after_seconds
        self.resend_after_seconds = resend_after_seconds
        self.interval_s = interval_s
        self.database_url = database_url
        self._stop_event = threading.Event()

    def run(self) -> None:
        # Wait one interval first: a restarted worker should not steal a job whose old worker is
        # only a moment late, and tests get a predictable first sweep.
        while not self._stop_event.wait(self.interval_s):
            self.sweep()

    def sweep(self) -> None:
        from db.session import session_scope

        try:
            with session_scope(self.database_url) as session:
                reap_stale_jobs(session, self.stale_after_seconds)
                if self.resend_after_seconds is not None:
                    resend_lost_messages(session, self.resend_after_seconds)
        except Exception:  # the database may be restarting; try again next round
            logger.exception("reaper sweep failed")

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=timeout)


def start_reaper_thread(settings: Settings | None = None, interval_s: float | None = None) -> ReaperThread:
    """Start a daemon thread that reaps stale jobs and re-sends lost messages; returns it.

    It sweeps every half of the shorter of `stale_after_seconds` and `resend_after_seconds` (at
    least every second). Called by every worker (`worker.runtime.main.run_worker`) and by `workbench serve`.
    """
    settings = settings or get_settings()
    if interval_s is None:
        interval_s = max(1.0, min(settings.stale_after_seconds, settings.resend_after_seconds) / 2)
    thread = ReaperThread(settings.stale_after_seconds, interval_s, database_url=settings.database_url,
                          resend_after_seconds=settings.resend_after_seconds)
    thread.start()
    return thread
