"""The job lifecycle in the database: submit, validate, enqueue, claim, cancel, resume.

    queued ──claim──> running ──> succeeded | failed | cancelled
      ^  │                │  ^
      │  └─cancel─> cancelled (at once)      running ──cancel──> cancel_requested=True
      └──── resume <── cancelled | failed     (the job checkpoints and stops: cancelled)
      └──── reaper <── running with a stale heartbeat (worker killed)

The database is the source of truth; the broker only carries "a job is waiting" messages with a
job id (see `worker.celery_app`). Rules every function here keeps:

  - Validate before inserting: `create_job` raises `JobParamsError(field, message)` and stores
    nothing when a parameter is wrong, so the UI can show the message next to the field.
  - Commit before sending: a message is sent only after the row it refers to is committed, so a
    worker can never receive a message for a job it cannot see yet.
  - Every state change that can race (two workers claiming, a worker finishing while a reaper
    requeues, a cancel while a worker claims) is a conditional UPDATE ... WHERE status = ...
    whose rowcount says who won. This works the same on SQLite and PostgreSQL.
  - `attempts` is incremented by every claim and is the job's fencing token: a worker writes the
    job's outcome only `WHERE attempts = <its attempt>`, so a worker that was presumed dead and
    replaced cannot overwrite its successor's state.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from db.models import Dataset, DatasetKind, Job, JobKind, JobLog, JobStatus, utcnow
from db.settings import get_settings

logger = logging.getLogger(__name__)

# Kinds the worker can run today. The others exist in the schema and are refused by create_job
# with a clear message until their runner lands.
AVAILABLE_KINDS = (JobKind.pretrain, JobKind.prepare, JobKind.train_tokenizer)

PRIORITY_RANGE = (-100, 100)
CLAIM_ATTEMPTS = 10  # SQLite may report "database is locked" when two claims collide; retry.


class JobParamsError(ValueError):
    """A job parameter is wrong; `field` names it (for the UI) and `message` says why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class JobStateError(ValueError):
    """The job is not in a state that allows the requested change (e.g. resuming a running job)."""


class JobNotFoundError(LookupError):
    """No job with that id."""


# ----------------------------------------------------------------------------- parameter specs

@dataclass(frozen=True)
class Param:
    """How one parameter is checked: its type, bounds, and whether it must be given."""

    type: str                      # "int" | "float" | "bool" | "str" | "compile"
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False  # "greater than" instead of "at least"
    choices: tuple[str, ...] | None = None
    max_length: int = 200
    help: str = ""


def _int(minimum: float | None = None, maximum: float | None = None, **kw) -> Param:
    return Param("int", minimum=minimum, maximum=maximum, **kw)


def _float(minimum: float | None = None, maximum: float | None = None, **kw) -> Param:
    return Param("float", minimum=minimum, maximum=maximum, **kw)


# Training-loop settings (llm.train.TrainConfig fields a user may set). `peak_flops`, `beta1`/`beta2`
# are left out on purpose: they are measurement/expert knobs, not something a form should offer.
TRAIN_PARAMS: dict[str, Param] = {
    "max_steps": _int(1, 10_000_000, help="optimizer steps"),
    "batch_size": _int(1, 4096, help="sequences per micro-batch"),
    "block_size": _int(8, 8192, help="tokens per sequence (also the model's context length)"),
    "grad_accum": _int(1, 1024, help="micro-batches per optimizer step"),
    "lr": _float(0, 1, exclusive_minimum=True, help="peak learning rate"),
    "min_lr": _float(0, 1, help="learning rate at the end of the cosine"),
    "warmup": _int(0, 10_000_000, help="linear warmup steps"),
    "weight_decay": _float(0, 10),
    "grad_clip": _float(0, 1e6, help="max gradient norm; 0 disables clipping"),
    "eval_every": _int(0, 10_000_000, help="steps between evaluations; 0 = only at the end"),
    "eval_batches": _int(1, 100_000),
    "log_every": _int(1, 10_000_000),
    "checkpoint_every": _int(0, 10_000_000, help="steps between checkpoints; 0 = only at the end"),
    "seed": _int(0, 2**32 - 1),
    "device": Param("str", choices=("auto", "cpu", "cuda"), help="'cuda:N' is accepted too"),
    "compile": Param("compile"),
    "dtype": Param("str", choices=("auto", "float32", "bfloat16")),
}

# Model shape overrides on top of the preset (llm.model.GPTConfig fields). block_size comes from the
# training block_size, which pretrain uses as the model's context length.
MODEL_PARAMS: dict[str, Param] = {
    "n_layer": _int(1, 96),
    "n_head": _int(1, 64),
    "n_embd": _int(8, 8192),
    "dropout": _float(0, 0.9),
}

DATASET_PARAM = Param("int", required=True, minimum=1, help="id of an uploaded text dataset")
TOKENIZER_PARAM = Param("str", help="gpt2, cl100k or the name of a trained tokenizer")

PARAM_SPECS: dict[JobKind, dict[str, Param]] = {
    JobKind.pretrain: {
        "dataset_id": DATASET_PARAM,
        "tokenizer": TOKENIZER_PARAM,
        "preset": Param("str", help="model shape: tiny, small, gpt2-124m"),
        "name": Param("str", help="name of the model this run produces"),
        **MODEL_PARAMS,
        **TRAIN_PARAMS,
    },
    JobKind.prepare: {
        "dataset_id": DATASET_PARAM,
        "tokenizer": TOKENIZER_PARAM,
        "val_fraction": _float(0, 0.5, exclusive_minimum=True),
        "seed": _int(0, 2**32 - 1),
        "scrub_pii": Param("bool", help="replace emails and phone numbers before tokenizing"),
    },
    JobKind.train_tokenizer: {
        "dataset_id": DATASET_PARAM,
        "vocab_size": _int(257, 262_144, required=True, help="256 byte tokens + merges"),
        "name": Param("str", required=True, max_length=64, help="letters, digits, '.', '_', '-'"),
    },
}

DEFAULTS: dict[JobKind, dict[str, Any]] = {
    JobKind.pretrain: {"tokenizer": "gpt2", "preset": "tiny"},
    JobKind.prepare: {"tokenizer": "gpt2"},
    JobKind.train_tokenizer: {},
}


def _check_type(field: str, value: Any, spec: Param) -> Any:
    """Return `value` converted to the spec's type, or raise JobParamsError naming `field`."""
    if spec.type == "int":
        # bool is an int in Python; True as "max_steps" is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise JobParamsError(field, f"must be a whole number, got {value!r}")
        if isinstance(value, float):
            # Web forms send numbers as floats (30.0); accept those that are whole.
            if not math.isfinite(value) or not value.is_integer():
                raise JobParamsError(field, f"must be a whole number, got {value!r}")
            value = int(value)
    elif spec.type == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise JobParamsError(field, f"must be a number, got {value!r}")
        value = float(value)
    elif spec.type == "bool":
        if not isinstance(value, bool):
            raise JobParamsError(field, f"must be true or false, got {value!r}")
    elif spec.type == "compile":
        if not (isinstance(value, bool) or value == "auto"):
            raise JobParamsError(field, f"must be true, false or 'auto', got {value!r}")
    elif spec.type == "str":
        if not isinstance(value, str) or not value.strip():
            raise JobParamsError(field, f"must be a non-empty string, got {value!r}")
        value = value.strip()
        if len(value) > spec.max_length:
            raise JobParamsError(field, f"must be at most {spec.max_length} characters")
    if spec.type in ("int", "float"):
        if spec.minimum is not None:
            too_small = value <= spec.minimum if spec.exclusive_minimum else value < spec.minimum
            if too_small:
                relation = "greater than" if spec.exclusive_minimum else "at least"
                word = "a positive whole number" if (spec.type == "int" and spec.minimum == 1) else None
                raise JobParamsError(field, f"must be {word or f'{relation} {spec.minimum:g}'}, got {value!r}")
        if spec.maximum is not None and value > spec.maximum:
            raise JobParamsError(field, f"must be at most {spec.maximum:g}, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        if not (field == "device" and isinstance(value, str) and _is_cuda_index(value)):
            raise JobParamsError(field, f"must be one of {', '.join(spec.choices)}; got {value!r}")
    return value


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def _check_dataset(session: Session, dataset_id: int) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise JobParamsError("dataset_id", f"no dataset with id {dataset_id}")
    if dataset.kind != DatasetKind.text:
        raise JobParamsError("dataset_id", f"dataset {dataset_id} is a {dataset.kind.value} dataset; "
                                           f"this job needs a text corpus")
    return dataset


def known_tokenizer_names(data_dir) -> list[str]:
    """Built-in tokenizer names plus trained ones under data_dir (without loading any of them)."""
    from llm.tokenizer import BUILTIN_TOKENIZERS, tokenizers_dir

    names = list(BUILTIN_TOKENIZERS)
    directory = tokenizers_dir(data_dir)
    if directory.is_dir():
        names += sorted(p.parent.name for p in directory.glob("*/tokenizer.json"))
    return names


def validate_params(session: Session, kind: JobKind | str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Check `params` for a job of `kind`; return them normalized with defaults filled in.

    Raises JobParamsError(field, message) on the first problem found (unknown names first, then
    missing required ones, then each value in turn, then checks across fields and the database).
    """
    kind = _check_kind(kind)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise JobParamsError("params", "must be an object of parameter names to values")
    specs = PARAM_SPECS[kind]
    for name in params:
        if name not in specs:
            raise JobParamsError(name, f"unknown parameter for a {kind.value} job; "
                                       f"known: {', '.join(sorted(specs))}")
    for name, spec in specs.items():
        if spec.required and params.get(name) is None:
            raise JobParamsError(name, "is required")
    normalized = dict(DEFAULTS[kind])
    for name, value in params.items():
        if value is None:  # an empty form field: keep the default
            continue
        normalized[name] = _check_type(name, value, specs[name])

    settings = get_settings()
    dataset = _check_dataset(session, normalized["dataset_id"])
    if not dataset.path:
        raise JobParamsError("dataset_id", f"dataset {dataset.id} has no stored file")
    if "tokenizer" in specs:
        tokenizer = normalized["tokenizer"]
        names = known_tokenizer_names(settings.data_dir)
        if tokenizer not in names:
            raise JobParamsError("tokenizer", f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(names)}")
    if kind == JobKind.pretrain:
        from llm.model import PRESETS  # imports torch; only when a pretrain job is submitted

        if normalized["preset"] not in PRESETS:
            raise JobParamsError("preset", f"unknown preset {normalized['preset']!r}; "
                                           f"choose one of {', '.join(PRESETS)}")
        shape = {**PRESETS[normalized["preset"]], **{k: normalized[k] for k in MODEL_PARAMS if k in normalized}}
        if shape["n_embd"] % shape["n_head"]:
            field = "n_head" if "n_head" in normalized else "n_embd"
            raise JobParamsError(field, f"n_embd ({shape['n_embd']}) must be divisible by n_head ({shape['n_head']})")
        if "min_lr" in normalized and normalized["min_lr"] > normalized.get("lr", normalized["min_lr"]):
            raise JobParamsError("min_lr", "must not be greater than lr")
    if kind == JobKind.train_tokenizer:
        from llm.tokenizer import BUILTIN_TOKENIZERS, TOKENIZER_NAME_RE

        name = normalized["name"]
        if not TOKENIZER_NAME_RE.match(name):
            raise JobParamsError("name", "use letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)")
        if name in BUILTIN_TOKENIZERS or name in known_tokenizer_names(settings.data_dir):
            raise JobParamsError("name", f"a tokenizer named {name!r} already exists")
    return normalized


def _check_kind(kind: JobKind | str) -> JobKind:
    try:
        kind = JobKind(kind)
    except ValueError:
        raise JobParamsError("kind", f"unknown job kind {kind!r}; choose one of "
                                     f"{', '.join(k.value for k in AVAILABLE_KINDS)}") from None
    if kind not in AVAILABLE_KINDS:
        raise JobParamsError("kind", f"{kind.value} jobs are not available yet; available: "
                                     f"{', '.join(k.value for k in AVAILABLE_KINDS)}")
    return kind


# ----------------------------------------------------------------------------- submit

def create_job(session: Session, kind: JobKind | str, params: dict[str, Any] | None,
               owner_id: int | None = None, priority: int = 0) -> Job:
    """Validate and insert a queued job, commit, and return it. Does NOT enqueue (see `submit_job`).

    Raises JobParamsError and inserts nothing when a parameter is wrong.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise JobParamsError("priority", f"must be a whole number, got {priority!r}")
    if not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        raise JobParamsError("priority", f"must be between {PRIORITY_RANGE[0]} and {PRIORITY_RANGE[1]}")
    kind = _check_kind(kind)
    normalized = validate_params(session, kind, params)
    job = Job(kind=kind, status=JobStatus.queued, params=normalized, priority=priority,
              owner_id=owner_id, dataset_id=normalized.get("dataset_id"),
              input_model_id=normalized.get("model_id"), progress=0.0, attempts=0,
              cancel_requested=False)
    session.add(job)
    session.flush()  # assigns job.id
    # Relative to the data dir: the data dir can move (a new mount) without rewriting rows.
    job.run_dir = f"runs/{job.id}"
    session.add(JobLog(job_id=job.id, line=f"queued {kind.value} job (priority {priority})"))
    session.commit()
    return job


def enqueue(job_id: int) -> bool:
    """Send a run_job message for `job_id`; call only after the job's row is committed.

    Returns False (and logs) when the broker is unreachable: the job stays queued in the
    database and is sent again by `requeue_orphans` at the next start or by the reaper.
    """
    from worker.celery_app import ensure_configured, job_queue, run_job

    try:
        ensure_configured()
        run_job.apply_async(args=[job_id], queue=job_queue())
    except Exception as error:  # kombu raises OperationalError and friends; the DB row is what matters
        logger.warning("could not enqueue job %s (it stays queued in the database): %s", job_id, error)
        return False
    return True


def submit_job(session: Session, kind: JobKind | str, params: dict[str, Any] | None,
               owner_id: int | None = None, priority: int = 0) -> Job:
    """`create_job` then `enqueue`: what the web and the CLI call."""
    job = create_job(session, kind, params, owner_id=owner_id, priority=priority)
    enqueue(job.id)
    return job


def add_log(session: Session, job_id: int, line: str) -> None:
    """Append one line to the job's log (not committed: the caller's transaction decides)."""
    session.add(JobLog(job_id=job_id, line=line))


def _get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id}")
    return job


# ----------------------------------------------------------------------------- cancel / resume

def request_cancel(session: Session, job_id: int) -> Job:
    """Cancel a job: a queued one at once, a running one cooperatively (it checkpoints and stops).

    Raises JobStateError for a job that has already finished.
    """
    now = utcnow()
    # Conditional: a worker may be claiming this very job; exactly one of us wins.
    cancelled = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, finished_at=now, cancel_requested=True)
    ).rowcount
    if cancelled:
        add_log(session, job_id, "cancelled before it started")
        session.commit()
        return _get_job(session, job_id)
    flagged = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.running).values(cancel_requested=True)
    ).rowcount
    if flagged:
        add_log(session, job_id, "cancel requested; the job stops at its next step and saves a checkpoint")
        session.commit()
        return _get_job(session, job_id)
    session.rollback()
    job = _get_job(session, job_id)
    raise JobStateError(f"job {job_id} is already {job.status.value}; only queued or running jobs can be cancelled")


def resume_job(session: Session, job_id: int) -> Job:
    """Put a cancelled or failed job back in the queue and enqueue it.

    Its run directory is kept, so a training job continues from its last checkpoint.
    """
    resumed = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_([JobStatus.cancelled, JobStatus.failed]))
        .values(status=JobStatus.queued, cancel_requested=False, error=None, finished_at=None,
                worker_host=None, heartbeat_at=None)
    ).rowcount
    if not resumed:
        session.rollback()
        job = _get_job(session, job_id)
        raise JobStateError(f"job {job_id} is {job.status.value}; only cancelled or failed jobs can be resumed")
    add_log(session, job_id, "resumed: queued again (training continues from its last checkpoint)")
    session.commit()
    enqueue(job_id)
    return _get_job(session, job_id)


def requeue_orphans(session: Session | None = None) -> list[int]:
    """Send a message for every queued job (at `serve` start, after the broker may have lost them).

    Duplicates are harmless: a message that finds no queued job left does nothing.
    """
    if session is None:
        from db.session import session_scope

        with session_scope() as own_session:
            return requeue_orphans(own_session)
    job_ids = list(session.scalars(
        select(Job.id).where(Job.status == JobStatus.queued).order_by(Job.priority.desc(), Job.id)))
    for job_id in job_ids:
        enqueue(job_id)
    return job_ids


# ----------------------------------------------------------------------------- claim

def claim_next_job(session: Session, worker_host: str | None = None,
                   kinds: tuple[JobKind, ...] | None = None) -> Job | None:
    """Atomically take the best queued job (priority desc, then id asc) and mark it running.

    Returns the claimed job (status running, attempts incremented: the caller's fencing token), or
    None when no job is queued. Safe with any number of concurrent workers:
      - PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED, so concurrent claimers take different rows
        without waiting on each other;
      - SQLite (FOR UPDATE is ignored): the UPDATE re-checks status = 'queued' and its rowcount tells
        whether we won; a lost race moves on to the next candidate, a locked database is retried.
    """
    for attempt in range(CLAIM_ATTEMPTS):
        try:
            return _try_claim(session, worker_host, kinds)
        except OperationalError as error:
            # SQLite: "database is locked" when another writer holds the lock past busy_timeout, or
            # a read transaction could not be upgraded. Start a fresh transaction and try again.
            session.rollback()
            if attempt == CLAIM_ATTEMPTS - 1:
                raise  # the database is unreachable: the caller retries the message later
            logger.info("claim attempt %s failed (%s); retrying", attempt + 1, error.orig)
            time.sleep(0.05 * (attempt + 1))
    return None


def _try_claim(session: Session, worker_host: str | None, kinds: tuple[JobKind, ...] | None) -> Job | None:
    # PostgreSQL: lock exactly the best row, so a concurrent claimer skips to the next-best one
    # (locking several would make it skip those too and take a lower-priority job).
    # SQLite: no row locks; look at a few candidates so a lost race can move on to the next.
    on_postgresql = session.get_bind().dialect.name == "postgresql"
    query = select(Job.id).where(Job.status == JobStatus.queued)
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    query = (query.order_by(Job.priority.desc(), Job.id).limit(1 if on_postgresql else 5)
             .with_for_update(skip_locked=True))
    candidates = list(session.scalars(query))
    for job_id in candidates:
        now = utcnow()
        won = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.queued)
            .values(status=JobStatus.running, attempts=Job.attempts + 1, started_at=now,
                    heartbeat_at=now, finished_at=None, error=None, worker_host=worker_host,
                    cancel_requested=False)
        ).rowcount
        if won:
            job = _get_job(session, job_id)
            add_log(session, job_id, f"started on {worker_host or 'a worker'} (attempt {job.attempts})")
            session.commit()
            return job
    session.commit()  # release FOR UPDATE locks on rows we looked at but did not take
    return None


# ----------------------------------------------------------------------------- finishing (fenced)

def finish_job(session: Session, job_id: int, attempt: int, status: JobStatus, *,
               error: str | None = None, log_line: str | None = None,
               extra_values: dict[str, Any] | None = None) -> bool:
    """Record the outcome of attempt `attempt` of a running job; commits.

    Returns False (and changes nothing) when the job is no longer this attempt's: it was reaped
    and claimed again, so the newer attempt owns it.
    """
    values: dict[str, Any] = {"status": status, "error": error, "heartbeat_at": None}
    if status.finished:
        values["finished_at"] = utcnow()
    if status == JobStatus.succeeded:
        values["progress"] = 1.0
    if status == JobStatus.queued:
        values["worker_host"] = None
    values.update(extra_values or {})
    won = session.execute(
        update(Job).where(Job.id == job_id, Job.attempts == attempt, Job.status == JobStatus.running)
        .values(**values)
    ).rowcount
    if not won:
        session.rollback()
        return False
    if log_line:
        add_log(session, job_id, log_line)
    session.commit()
    return True


def with_retries(operation: Callable[[], Any], session: Session | None = None,
                 attempts: int = 5, delay_s: float = 0.5) -> Any:
    """Run a DB operation again after OperationalError (a locked SQLite, a restarting PostgreSQL).

    `session` is rolled back before each retry, so a half-done transaction is not repeated on top
    of itself.
    """
    for attempt in range(attempts):
        try:
            return operation()
        except OperationalError:
            if session is not None:
                session.rollback()
            if attempt == attempts - 1:
                raise
            time.sleep(delay_s * (attempt + 1))
