"""The Celery task `run_job` (claim the best queued job and run it), what the worker does when the
process running it is killed, and the worker-shutdown hook.

A prefork pool child killed by the kernel (the OOM killer sends SIGKILL) is reported to the worker's
main process as `WorkerLostError` through the task's Request (Celery's documented hook for it:
a custom `Request.on_failure`). The job it ran is then failed there and then, not resumable (it would
only be killed again), and the message goes back to the queue (`task_reject_on_worker_lost`), so
the next queued job runs. Without this the job would sit `running` until the reaper, then be
restarted and killed again up to `reaper.MAX_LOST_ATTEMPTS` times.

Kept apart from `worker.runtime.celery_app` so that sending a message (`worker.jobs.messages`, used by the web
process) never imports the code that runs jobs: the dependency goes one way,
tasks -> runner -> jobs -> messages -> celery_app.
"""

from __future__ import annotations

import logging

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery import Task
from celery.signals import worker_process_init, worker_shutting_down
from celery.worker.request import Request

from worker.jobs.messages import CLAIM_MAX_RETRIES, CLAIM_RETRY_DELAY_S, RUN_JOB_TASK
from worker.runtime.celery_app import app

logger = logging.getLogger(__name__)


class RunJobRequest(Request):
    """run_job's request in the worker's main process: fails the job of a pool child that was killed."""

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        error = exc_info.exception
        if isinstance(error, ExceptionWithTraceback):  # how billiard hands it over, as Celery's own handler unwraps
            error = error.exc
        if isinstance(error, WorkerLostError) and self.worker_pid:
            fail_job_of_lost_process(self.hostname, self.worker_pid, str(error))
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


class RunJobTask(Task):
    Request = RunJobRequest


def fail_job_of_lost_process(node_name: str, pid: int, detail: str) -> list[int]:
    """The pool process `pid` of worker `node_name` died under a job: fail that job if it was SIGKILL.

    Another death (a crash signal) is left to the reaper, which requeues the job once its heartbeat is
    stale (a crash may not happen again). Returns the ids failed.
    """
    from db.session import session_scope
    from worker.runtime.reaper import fail_killed_job, killed_reason
    from worker.runtime.runner import job_worker_host

    if "SIGKILL" not in detail:
        logger.warning("the process running a job (pid %s) died: %s; the reaper requeues its job", pid, detail)
        return []
    try:
        with session_scope() as session:
            failed = fail_killed_job(session, job_worker_host(node_name, pid), killed_reason(detail))
    except Exception:  # the database is unreachable: the reaper takes the job back later
        logger.exception("could not record that the process running a job (pid %s) was killed", pid)
        return []
    logger.warning("job(s) %s failed: their process (pid %s) was killed (SIGKILL)", failed, pid)
    return failed


@app.task(name=RUN_JOB_TASK, bind=True, base=RunJobTask, acks_late=True, reject_on_worker_lost=True,
          ignore_result=True)
def run_job(self, job_id: int) -> int | None:
    """Claim the best queued job and run it to the end; returns the id of the job run, or None.

    `job_id` is the job whose submission sent this message. It is only a hint (logged); the
    claim is made from the database, so priorities hold and duplicates are no-ops.
    """
    # Imported here so the web process, which only sends this task, never imports torch.
    from sqlalchemy.exc import OperationalError

    from worker.runtime.runner import NoSlotsHere, job_worker_host, run_next_job

    worker_host = job_worker_host(self.request.hostname) if self.request.hostname else None
    try:
        return run_next_job(worker_host=worker_host, message_job_id=job_id)
    except NoSlotsHere as reason:
        # The message is for a worker with more (or free) device slots: back to the broker, for any worker.
        logger.info("message for job %s handed back for %ss: %s", job_id, CLAIM_RETRY_DELAY_S, reason)
        raise self.retry(countdown=CLAIM_RETRY_DELAY_S, max_retries=None)
    except OperationalError as error:
        # Only the claim can raise this (a job's own errors are recorded on the job): the database
        # is unreachable. Acknowledging now would lose the message, so Celery re-sends it later.
        logger.warning("database unavailable while claiming a job; retrying in %ss: %s",
                       CLAIM_RETRY_DELAY_S, error.orig)
        raise self.retry(exc=error, countdown=CLAIM_RETRY_DELAY_S, max_retries=CLAIM_MAX_RETRIES)


@worker_shutting_down.connect
def _stop_running_job_on_worker_shutdown(sig=None, how=None, exitcode=None, **kwargs) -> None:
    """On a warm shutdown (SIGTERM, Ctrl+C) ask the running jobs to checkpoint and stop.

    Celery sends this signal from the worker's MainProcess; with the solo pool the job runs there
    too, and a prefork worker shares the flag with its children (`heartbeat.share_shutdown_flag`), so
    the flag reaches every job and each goes back to the queue with a fresh checkpoint instead of the
    worker waiting for training runs to finish.
    """
    from worker.runtime import heartbeat

    heartbeat.request_worker_shutdown()


@worker_process_init.connect
def _checkpoint_on_sigterm_in_pool_child(**kwargs) -> None:
    """A prefork child that gets SIGTERM itself (`workbench serve` and the tests end a worker's whole process
    group) while it runs a job asks the job to checkpoint and stop, as the parent's warm shutdown does; an idle
    child ends at once, as Celery's default would."""
    import os
    import signal

    from worker.runtime import heartbeat

    def on_sigterm(signum, frame):
        if heartbeat.job_running():
            heartbeat.request_worker_shutdown()
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
