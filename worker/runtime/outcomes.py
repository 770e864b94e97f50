"""Recording how an attempt of a job ended, fenced by the attempt (`worker.jobs.lifecycle.finish_job`): used by the
runner for a job in its own process, by rank 0 of a job on several processes (rank_entry.py) and by the launcher
that watched them (launcher.py).

    readable_error(error)   the sentence a person sees in the Jobs tab
    record_failure          failed: the readable error, the traceback in the job's log
    requeue                 back to the queue (the worker is going away) and its message sent again
    record_outcome          what a handler returned: succeeded (+ its Model row), cancelled, requeued, or nothing
                            when the attempt was lost to another worker
"""

from __future__ import annotations

import logging
import traceback

from sqlalchemy.orm import Session

from db.models import JobStatus
from db.session import with_retries
from worker.jobs import lifecycle as jobs
from worker.jobs.context import Outcome

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


def readable_error(error: BaseException) -> str:
    """The message a person sees in the Jobs tab: no traceback, the type only when it helps."""
    message = str(error).strip()
    if isinstance(error, (ValueError, OSError, FloatingPointError)) and message:
        text = message  # llm raises these with sentences meant for people
    else:
        text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


def record_failure(session: Session, job_id: int, attempt: int, error: Exception) -> JobStatus | None:
    """The attempt failed: a readable `error` on the job, the traceback in its log (fenced by the attempt)."""
    message = readable_error(error)
    logger.warning("job %s failed: %s", job_id, message)
    trace = "".join(traceback.format_exception(error))
    recorded = with_retries(lambda: jobs.finish_job(
        session, job_id, attempt, JobStatus.failed, error=message, log_line=f"failed: {message}\n{trace}"), session)
    return JobStatus.failed if recorded else None


def requeue(session: Session, job_id: int, attempt: int, note: str) -> bool:
    """Hand the job back to the queue (its worker is going away) and send its message again."""
    try:
        requeued = jobs.finish_job(session, job_id, attempt, JobStatus.queued, log_line=note, event="requeued")
    except Exception:  # the database may be gone too; the reaper will requeue it later
        logger.exception("could not requeue job %s", job_id)
        return False
    if requeued:
        jobs.enqueue(job_id)
    return requeued


def record_outcome(session: Session, job_id: int, attempt: int, heartbeat,
                   outcome: Outcome) -> JobStatus | None:
    """Record what the handler returned: succeeded (with what `finalize` adds), cancelled, requeued on a worker
    shutdown, or nothing when the attempt was lost (`heartbeat.stop_reason`)."""
    if outcome.stopped:
        reason = heartbeat.stop_reason
        if reason == "lost":
            logger.warning("job %s attempt %s was taken over by another worker; leaving it", job_id, attempt)
            return None
        if reason == "shutdown":
            requeued = requeue(session, job_id, attempt,
                                f"{outcome.summary}; the worker is shutting down, so the job was requeued")
            return JobStatus.queued if requeued else None
        recorded = with_retries(lambda: jobs.finish_job(
            session, job_id, attempt, JobStatus.cancelled,
            log_line=f"cancelled: {outcome.summary}; the checkpoint is kept, resume to continue"), session)
        return JobStatus.cancelled if recorded else None

    def record_success() -> bool:
        extra = outcome.finalize(session) if outcome.finalize is not None else {}
        # finish_job rolls back (dropping a Model row added by finalize) if the job is no longer ours.
        return jobs.finish_job(session, job_id, attempt, JobStatus.succeeded, extra_values=extra,
                               log_line=f"succeeded: {outcome.summary}" if outcome.summary else "succeeded")

    try:
        recorded = with_retries(record_success, session)
    except Exception as error:  # e.g. the model directory is unreadable
        session.rollback()
        return record_failure(session, job_id, attempt, error)
    return JobStatus.succeeded if recorded else None
