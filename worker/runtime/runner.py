"""Turn a claimed Job row into calls into `llm/`, and write what happens back to the database.

`run_next_job()` is what the `run_job` task does: claim the best queued job, then
`execute_job()` it:

  1. start a `JobHeartbeat` (heartbeats + cancel flag; see heartbeat.py); a job on several processes
     (devices > 1) goes to `launcher.run_job_ranks` instead of 2., whose ranks run the same handler
     (nodes > 1: this worker is node 0; a message for such a job makes its other workers join it first);
  2. run the handler its kind declares (`worker/kinds/`) with a `JobContext` whose callbacks queue
     Metric rows, `jobs.progress` and JobLog lines for a background writer (progress_writer.py),
     flushed when the handler returns;
  3. record the outcome, fenced by the attempt number (see jobs.finish_job):
       succeeded  (+ the Model row it produced, in the same transaction),
       failed     (a readable `error`; the traceback goes to the JobLog, not to `error`),
       cancelled  (the user asked; the checkpoint stays, so "resume" continues it),
       queued     (this worker is shutting down; the job is re-enqueued and resumes elsewhere),
       untouched  (the job was taken from us by a reaper: the newer attempt owns it).

Handlers are idempotent, as late acknowledgement requires: preparing reuses a finished prepared
directory, pretraining resumes from `runs/<job id>/checkpoint/`, and a run that had already
finished just saves its model again.

`llm` knows nothing of the database: everything it reports comes through `on_metrics`,
`on_progress`, `log` and `should_stop`.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import time
from dataclasses import replace

from sqlalchemy.orm import Session

from db.models import Dataset, Job, JobStatus, Model
from db.settings import Settings, get_settings, safe_join
from llm.threads import apply_thread_budget
from worker.jobs import devices
from worker.jobs import lifecycle as jobs
from worker.jobs.context import JobContext
from worker.jobs.messages import broker_url_of, job_queue_of
from worker.runtime import launcher
from worker.runtime.outcomes import record_failure, record_outcome, requeue
from worker.runtime.heartbeat import JobHeartbeat
from worker.kinds import get_spec
from worker.jobs.progress_writer import DirectWriter, ProgressWriter
from worker.jobs.throughput import DEVICE_USE

logger = logging.getLogger(__name__)

SLOT_POLL_S = 1.0  # how often a message whose jobs wait for this worker's device slots looks again


def default_worker_host() -> str:
    return job_worker_host(socket.gethostname())


def job_worker_host(node_name: str, pid: int | None = None) -> str:
    """What a running job records as its `worker_host`: `<Celery node name>:<pid of the process running it>`.

    The pid tells a prefork worker's pool children apart, so the worker's main process can find the job
    of a child that was killed (worker.runtime.tasks), and `serve` the jobs of a worker process that exited.
    """
    return f"{node_name}:{os.getpid() if pid is None else pid}"


# ----------------------------------------------------------------------------- running a job

class NoSlotsHere(Exception):
    """The message cannot be used by this worker now: the queued jobs need more device slots than it has (they
    are another worker's), or it is shutting down while they wait for its slots. The task hands the message back
    to the broker for a little later (`worker.runtime.tasks.run_job`)."""


def run_next_job(worker_host: str | None = None, message_job_id: int | None = None,
                 settings: Settings | None = None, slots: list[str] | None = None) -> int | None:
    """Claim the best queued job that fits this worker's free device slots and run it; return its id, or None
    when nothing was queued.

    `slots`: the worker's device slots (default `devices.declared_slots()`, one CPU slot where none were
    declared). While the queued jobs fit the worker but not the slots its other jobs leave free, wait for a slot
    (polling every SLOT_POLL_S; a smaller job that fits is taken meanwhile); raise NoSlotsHere when they need
    more slots than this worker has, or when it is shutting down.
    """
    from db.session import session_scope

    from worker.runtime.heartbeat import worker_shutdown_requested

    settings = settings or get_settings()
    worker_host = worker_host or default_worker_host()
    slots = list(slots or devices.declared_slots())
    # The message of a job on several machines that still waits for workers: this one joins it (rendezvous.py).
    followed = launcher.follow_waiting_job(worker_host, message_job_id, settings, slots)
    if followed is not None:
        return followed
    while True:
        with session_scope(settings.database_url) as session:
            job = jobs.claim_next_job(session, worker_host, slots=slots)
            claimed = (job.id, job.attempts) if job is not None else None
            waiting = jobs.waiting_for_slots(session, worker_host, slots) if claimed is None else None
        if claimed is not None:
            break
        if waiting is None:
            # Normal: the message's job was cancelled, or another worker took it, or this is a
            # duplicate (requeue_orphans, a redelivery after the visibility timeout).
            logger.info("message for job %s: no queued job left; nothing to do", message_job_id)
            return None
        if waiting == "elsewhere" or worker_shutdown_requested():
            raise NoSlotsHere(f"queued jobs need more device slots than {len(slots)}" if waiting == "elsewhere"
                              else "the worker is shutting down")
        time.sleep(SLOT_POLL_S)
    job_id, attempt = claimed
    if message_job_id is not None and message_job_id != job_id:
        logger.info("message for job %s runs job %s (higher priority or older)", message_job_id, job_id)
    execute_job(job_id, attempt, settings)
    return job_id


def execute_job(job_id: int, attempt: int, settings: Settings | None = None) -> JobStatus | None:
    """Run attempt `attempt` of the (already claimed, running) job and record its outcome.

    Returns the status recorded, or None when the job was no longer ours to record.
    """
    from db.session import SessionLocal

    settings = settings or get_settings()
    session = SessionLocal(settings.database_url)
    try:
        with JobHeartbeat(job_id, attempt, settings.heartbeat_seconds, settings.database_url,
                          broker_url_of(settings), job_queue_of(settings), settings.stale_after_seconds) as heartbeat:
            if launcher.launches(session, job_id):  # several processes: torchrun's ranks (launcher.py)
                return launcher.run_job_ranks(session, job_id, attempt, settings, heartbeat)
            writer = ProgressWriter(job_id, attempt, settings.database_url).start()
            try:
                try:
                    ctx = _make_context(session, job_id, attempt, settings, heartbeat, writer)
                    spec = get_spec(ctx.kind)
                    if spec is None:
                        raise ValueError(f"{ctx.kind} jobs are not available on this worker")
                    # This process's share of the cores (its worker's job slots share them), said in the job's log.
                    apply_thread_budget(log=ctx.log)
                    with DEVICE_USE.job():  # a throughput probe in progress finishes first (worker.jobs.throughput)
                        outcome = spec.handler(ctx)
                finally:
                    # The metrics and log lines go in before the outcome: a finished job's record is complete.
                    writer.close()
            except Exception as error:
                session.rollback()
                return record_failure(session, job_id, attempt, error)
            except BaseException:
                # The worker itself is going down (cold shutdown, SystemExit): hand the job back.
                session.rollback()
                requeue(session, job_id, attempt, "the worker stopped; the job was requeued")
                raise
            return record_outcome(session, job_id, attempt, heartbeat, outcome)
    finally:
        session.close()
        _release_memory()


def _make_context(session: Session, job_id: int, attempt: int, settings: Settings,
                  heartbeat: JobHeartbeat, writer: ProgressWriter | None = None) -> JobContext:
    """The handler's context; without `writer`, progress is written synchronously (DirectWriter)."""
    job = session.get(Job, job_id)
    # A job on one GPU slot of a worker with several runs on that GPU (unless it pins cuda:N or the CPU).
    slots = devices.assigned_devices(job)
    params = dict(job.params or {})
    if params.get("device") is not None:
        params["device"] = devices.job_device(params["device"], slots)
    device = devices.job_device(settings.device, slots)
    if device != settings.device:
        settings = replace(settings, device=device)
        # Torch's current device too (per process, or per thread in a threads pool): what asks for "the current
        # device" (memory stats, empty_cache) then stays on this GPU instead of opening a context on GPU 0.
        import torch

        torch.cuda.set_device(torch.device(device))
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id is not None else None
    input_model = session.get(Model, job.input_model_id) if job.input_model_id is not None else None
    run_dir = safe_join(settings.data_dir, job.run_dir or f"runs/{job_id}")
    run_dir.mkdir(parents=True, exist_ok=True)
    session.commit()  # end the read transaction: SQLite writers elsewhere must not wait on us
    return JobContext(job_id=job_id, attempt=attempt, kind=job.kind, params=params,
                      owner_id=job.owner_id, dataset=dataset, input_model=input_model, run_dir=run_dir, settings=settings,
                      session=session, heartbeat=heartbeat,
                      writer=writer or DirectWriter(job_id, attempt, settings.database_url))


def _release_memory() -> None:
    """Give memory back between jobs: a long-lived GPU worker runs many."""
    gc.collect()
    torch = sys.modules.get("torch")
    # Only if this process already uses CUDA: never initialise it just to empty a cache.
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
