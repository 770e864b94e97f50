"""Turn a claimed Job row into calls into `llm/`, and write what happens back to the database.

`run_next_job()` is what the `run_job` task does: claim the best queued job, then
`execute_job()` it:

  1. start a `JobHeartbeat` (heartbeats + cancel flag; see heartbeat.py);
  2. run the kind's handler (`pretrain`, `prepare`, `train_tokenizer`) with callbacks that write
     Metric rows, `jobs.progress` and JobLog lines as the work goes;
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

import fcntl
import gc
import json
import logging
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from db.models import Dataset, Job, JobKind, JobLog, JobStatus, Metric, Model, ModelKind
from db.settings import Settings, get_settings, safe_join
from worker import jobs
from worker.heartbeat import JobHeartbeat

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000
# Progress lines for work counted in items (prepare) are written at most this often.
PROGRESS_LOG_INTERVAL_S = 5.0


def default_worker_host() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ----------------------------------------------------------------------------- the context handlers get

@dataclass
class JobContext:
    """What a handler needs: the job's snapshot, paths, and the callbacks that report progress."""

    job_id: int
    attempt: int
    kind: JobKind
    params: dict[str, Any]
    owner_id: int | None
    dataset: Dataset | None
    run_dir: Path
    settings: Settings
    session: Session
    heartbeat: JobHeartbeat
    _first_metrics_step: int | None = field(default=None, init=False)
    _last_progress_log: float = field(default=0.0, init=False)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def should_stop(self) -> bool:
        return self.heartbeat.should_stop()

    def log(self, line: str) -> None:
        """One JobLog line, committed at once so the UI shows it live."""
        logger.info("job %s: %s", self.job_id, line)
        self._write(lambda: self.session.add(JobLog(job_id=self.job_id, line=str(line))))

    def set_progress(self, progress: float) -> None:
        progress = min(max(float(progress), 0.0), 1.0)
        self._write(lambda: self.session.execute(
            update(Job).where(Job.id == self.job_id, Job.attempts == self.attempt).values(progress=progress)))

    def on_metrics(self, record: dict) -> None:
        """Training callback: one Metric row per numeric value, plus the job's progress."""
        step = int(record["step"])
        values = {name: float(value) for name, value in record.items()
                  if name not in ("step", "progress") and isinstance(value, (int, float))
                  and not isinstance(value, bool) and math.isfinite(value)}

        def write() -> None:
            self.session.add_all(Metric(job_id=self.job_id, step=step, name=name, value=value)
                                 for name, value in values.items())
            if "progress" in record:
                progress = min(max(float(record["progress"]), 0.0), 1.0)
                self.session.execute(update(Job).where(Job.id == self.job_id, Job.attempts == self.attempt)
                                     .values(progress=progress))

        self._write(write)

    def on_progress(self, done: int, total: int | None) -> None:
        """Item-count callback (prepare): a log line every few seconds, and progress when known."""
        now = time.monotonic()
        finished = total is not None and done >= total
        if finished or now - self._last_progress_log >= PROGRESS_LOG_INTERVAL_S:
            self._last_progress_log = now
            self.log(f"{done:,} documents processed" + (f" of {total:,}" if total else ""))

    def _write(self, operation: Callable[[], object]) -> None:
        # A failed progress write must not kill an hour of training: log it and carry on.
        try:
            operation()
            self.session.commit()
        except Exception as error:
            self.session.rollback()
            logger.warning("job %s: could not write progress to the database: %s", self.job_id, error)


@dataclass
class Outcome:
    """What a handler returns: whether it stopped early, and how to record a success."""

    stopped: bool = False
    summary: str = ""
    # Called inside the transaction that marks the job succeeded; returns extra Job column values.
    finalize: Callable[[Session], dict[str, Any]] | None = None


# ----------------------------------------------------------------------------- prepared data cache

@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on this machine (two jobs preparing the same data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepared_dir_for(settings: Settings, dataset_id: int, tokenizer: str) -> Path:
    """Where a dataset's token files for `tokenizer` are cached: datasets/<id>/prepared/<tokenizer>/."""
    return safe_join(settings.data_dir, "datasets", str(dataset_id), "prepared", tokenizer)


def corpus_path(ctx: JobContext) -> Path:
    if ctx.dataset is None:
        raise ValueError("this job has no dataset")
    path = safe_join(ctx.data_dir, ctx.dataset.path)
    if not path.is_file():
        raise FileNotFoundError(f"the file of dataset {ctx.dataset.id} ({ctx.dataset.name!r}) is missing "
                                f"from the data directory")
    return path


def ensure_prepared(ctx: JobContext, tokenizer: str, *, force: bool = False, **prepare_options) -> Path | None:
    """Token files of the job's dataset for `tokenizer`, preparing them unless cached (or `force`).

    None if the job was cancelled while preparing (nothing half-written is left)."""
    from llm.prepare import prepare

    out_dir = prepared_dir_for(ctx.settings, ctx.dataset.id, tokenizer)
    with _file_lock(out_dir.with_name(out_dir.name + ".lock")):
        if not force and (out_dir / "stats.json").is_file():
            ctx.log(f"using the prepared data of dataset {ctx.dataset.id} for tokenizer {tokenizer}")
            return out_dir
        ctx.log(f"preparing dataset {ctx.dataset.id} with tokenizer {tokenizer}")
        stats = prepare(corpus_path(ctx), tokenizer, out_dir, data_dir=ctx.data_dir,
                        on_progress=ctx.on_progress, should_stop=ctx.should_stop, **prepare_options)
        if stats.get("stopped"):
            return None
        ctx.log(f"prepared {stats['documents']:,} documents, {stats['tokens']:,} tokens "
                f"(train {stats['train']['tokens']:,}, val {stats['val']['tokens']:,}; "
                f"{stats['duplicates_removed']:,} duplicates removed)")
    return out_dir


# ----------------------------------------------------------------------------- handlers

def _checkpoint_step(run_dir: Path) -> int:
    from llm.train import checkpoint_dir

    checkpoint = checkpoint_dir(run_dir)
    if checkpoint is None:
        return 0
    return int(json.loads((checkpoint / "checkpoint.json").read_text()).get("step", 0))


def run_pretrain(ctx: JobContext) -> Outcome:
    from dataclasses import fields as dataclass_fields

    from llm.checkpoint import read_config
    from llm.pretrain import pretrain
    from llm.train import TrainConfig

    params = ctx.params
    prepared = ensure_prepared(ctx, params["tokenizer"])
    if prepared is None:
        return Outcome(stopped=True, summary="stopped while preparing the data")

    # Resuming: steps after the checkpoint run again, so their metrics from the lost attempt go
    # (the same thing llm.train does to metrics.jsonl). A fresh run starts with none.
    resume_step = _checkpoint_step(ctx.run_dir)
    ctx.session.execute(delete(Metric).where(Metric.job_id == ctx.job_id, Metric.step > resume_step))
    ctx.session.commit()
    if resume_step:
        ctx.log(f"resuming from the checkpoint at step {resume_step}")

    config_names = {f.name for f in dataclass_fields(TrainConfig)}
    train_values = {name: value for name, value in params.items()
                    if name in jobs.TRAIN_PARAMS and name in config_names}
    # The job may pin a device; otherwise the worker's own setting decides (WORKBENCH_DEVICE).
    train_values.setdefault("device", ctx.settings.device)
    overrides = {name: params[name] for name in jobs.MODEL_PARAMS if name in params}

    result = pretrain(prepared, ctx.run_dir, preset=params["preset"], train_config=TrainConfig(**train_values),
                      model_overrides=overrides or None, data_dir=ctx.data_dir,
                      on_metrics=ctx.on_metrics, should_stop=ctx.should_stop, resume=True, log=ctx.log)
    if result["stopped"]:
        return Outcome(stopped=True, summary=f"stopped at step {result['step']}")

    model_dir = Path(result["model_dir"])
    config = read_config(model_dir)
    summary = f"finished at step {result['step']}: loss {result['loss']:.4f}"
    if result.get("val_loss") is not None:
        summary += f", val_loss {result['val_loss']:.4f}"
    if result.get("val_bpb") is not None:
        summary += f", val_bpb {result['val_bpb']:.4f}"

    def finalize(session: Session) -> dict[str, Any]:
        model = Model(name=params.get("name") or f"pretrain-{ctx.job_id}", kind=ModelKind.base,
                      tokenizer=config["tokenizer"], config=config["model"],
                      path=model_dir.relative_to(ctx.data_dir).as_posix(),
                      job_id=ctx.job_id, owner_id=ctx.owner_id)
        session.add(model)
        session.flush()
        return {"output_model_id": model.id}

    return Outcome(summary=summary, finalize=finalize)


def run_prepare(ctx: JobContext) -> Outcome:
    params = ctx.params
    options = {name: params[name] for name in ("val_fraction", "seed", "scrub_pii") if name in params}
    # An explicit prepare job always re-prepares: that is why someone asked for it.
    out_dir = ensure_prepared(ctx, params["tokenizer"], force=True, **options)
    if out_dir is None:
        return Outcome(stopped=True, summary="stopped while preparing; nothing was written")
    stats = json.loads((out_dir / "stats.json").read_text())
    ctx.log("stats " + json.dumps({key: stats[key] for key in
                                   ("documents", "tokens", "bytes", "bytes_per_token", "duplicates_removed",
                                    "empty_removed", "train", "val") if key in stats}))
    return Outcome(summary=f"{stats['tokens']:,} tokens, {stats['bytes_per_token']:.2f} bytes per token")


def run_train_tokenizer(ctx: JobContext) -> Outcome:
    from llm.corpus import iter_documents
    from llm.tokenizer import train_tokenizer

    params = ctx.params
    out_dir = safe_join(ctx.data_dir, "tokenizers", params["name"])
    if (out_dir / "tokenizer.json").is_file():
        raise ValueError(f"a tokenizer named {params['name']!r} already exists")
    ctx.log(f"training a BPE tokenizer with {params['vocab_size']:,} tokens on dataset {ctx.dataset.id}")
    tokenizer = train_tokenizer(iter_documents(corpus_path(ctx)), params["vocab_size"], out_dir, params["name"],
                                on_progress=ctx.on_progress, should_stop=ctx.should_stop)
    if tokenizer is None:
        return Outcome(stopped=True, summary="stopped while reading the corpus; nothing was written")
    return Outcome(summary=f"tokenizer {tokenizer.name!r}: {tokenizer.vocab_size:,} tokens "
                           f"(including special tokens)")


HANDLERS: dict[JobKind, Callable[[JobContext], Outcome]] = {
    JobKind.pretrain: run_pretrain,
    JobKind.prepare: run_prepare,
    JobKind.train_tokenizer: run_train_tokenizer,
}


# ----------------------------------------------------------------------------- running a job

def readable_error(error: BaseException) -> str:
    """The message a person sees in the Jobs tab: no traceback, the type only when it helps."""
    message = str(error).strip()
    if isinstance(error, (ValueError, OSError, FloatingPointError)) and message:
        text = message  # llm raises these with sentences meant for people
    else:
        text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


def run_next_job(worker_host: str | None = None, message_job_id: int | None = None,
                 settings: Settings | None = None) -> int | None:
    """Claim the best queued job and run it; return its id, or None when nothing was queued."""
    from db.session import session_scope

    settings = settings or get_settings()
    worker_host = worker_host or default_worker_host()
    with session_scope(settings.database_url) as session:
        job = jobs.claim_next_job(session, worker_host)
        claimed = (job.id, job.attempts) if job is not None else None
    if claimed is None:
        # Normal: the message's job was cancelled, or another worker took it, or this is a
        # duplicate (requeue_orphans, a redelivery after the visibility timeout).
        logger.info("message for job %s: no queued job left; nothing to do", message_job_id)
        return None
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
        with JobHeartbeat(job_id, attempt, settings.heartbeat_seconds, settings.database_url) as heartbeat:
            try:
                ctx = _make_context(session, job_id, attempt, settings, heartbeat)
                handler = HANDLERS.get(ctx.kind)
                if handler is None:
                    raise ValueError(f"{ctx.kind.value} jobs are not available yet")
                outcome = handler(ctx)
            except Exception as error:
                session.rollback()
                return _record_failure(session, job_id, attempt, error)
            except BaseException:
                # The worker itself is going down (cold shutdown, SystemExit): hand the job back.
                session.rollback()
                _requeue(session, job_id, attempt, "the worker stopped; the job was requeued")
                raise
            return _record_outcome(session, job_id, attempt, heartbeat, outcome)
    finally:
        session.close()
        _release_memory()


def _make_context(session: Session, job_id: int, attempt: int, settings: Settings,
                  heartbeat: JobHeartbeat) -> JobContext:
    job = session.get(Job, job_id)
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id is not None else None
    run_dir = safe_join(settings.data_dir, job.run_dir or f"runs/{job_id}")
    run_dir.mkdir(parents=True, exist_ok=True)
    session.commit()  # end the read transaction: SQLite writers elsewhere must not wait on us
    return JobContext(job_id=job_id, attempt=attempt, kind=job.kind, params=dict(job.params or {}),
                      owner_id=job.owner_id, dataset=dataset, run_dir=run_dir, settings=settings,
                      session=session, heartbeat=heartbeat)


def _record_failure(session: Session, job_id: int, attempt: int, error: Exception) -> JobStatus | None:
    message = readable_error(error)
    logger.warning("job %s failed: %s", job_id, message)
    trace = "".join(traceback.format_exception(error))
    recorded = jobs.with_retries(lambda: jobs.finish_job(
        session, job_id, attempt, JobStatus.failed, error=message, log_line=f"failed: {message}\n{trace}"), session)
    return JobStatus.failed if recorded else None


def _requeue(session: Session, job_id: int, attempt: int, note: str) -> bool:
    try:
        requeued = jobs.finish_job(session, job_id, attempt, JobStatus.queued, log_line=note)
    except Exception:  # the database may be gone too; the reaper will requeue it later
        logger.exception("could not requeue job %s", job_id)
        return False
    if requeued:
        jobs.enqueue(job_id)
    return requeued


def _record_outcome(session: Session, job_id: int, attempt: int, heartbeat: JobHeartbeat,
                    outcome: Outcome) -> JobStatus | None:
    if outcome.stopped:
        reason = heartbeat.stop_reason
        if reason == "lost":
            logger.warning("job %s attempt %s was taken over by another worker; leaving it", job_id, attempt)
            return None
        if reason == "shutdown":
            requeued = _requeue(session, job_id, attempt,
                                f"{outcome.summary}; the worker is shutting down, so the job was requeued")
            return JobStatus.queued if requeued else None
        recorded = jobs.with_retries(lambda: jobs.finish_job(
            session, job_id, attempt, JobStatus.cancelled,
            log_line=f"cancelled: {outcome.summary}; the checkpoint is kept, resume to continue"), session)
        return JobStatus.cancelled if recorded else None

    def record_success() -> bool:
        extra = outcome.finalize(session) if outcome.finalize is not None else {}
        # finish_job rolls back (dropping a Model row added by finalize) if the job is no longer ours.
        return jobs.finish_job(session, job_id, attempt, JobStatus.succeeded, extra_values=extra,
                               log_line=f"succeeded: {outcome.summary}" if outcome.summary else "succeeded")

    try:
        recorded = jobs.with_retries(record_success, session)
    except Exception as error:  # e.g. the model directory is unreadable
        session.rollback()
        return _record_failure(session, job_id, attempt, error)
    return JobStatus.succeeded if recorded else None


def _release_memory() -> None:
    """Give memory back between jobs: a long-lived GPU worker runs many."""
    gc.collect()
    torch = sys.modules.get("torch")
    # Only if this process already uses CUDA: never initialise it just to empty a cache.
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
