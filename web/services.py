"""The one place where the REST API and the Gradio UI read and change things.

Both front ends call these functions, so a rule (who may upload, what an upload must look like, when
a job is sent to the queue) is written once. The functions raise `ServiceError` subclasses with a
message meant for people; the API turns them into HTTP status codes (`web/api.py`), the UI shows
the message.

Sessions: functions that change things take an open `Session` as their first argument and commit
it themselves when the change is complete (so "nothing stored half-way" is decided here, not by
the caller). Functions that only read take `session=None` as a keyword: the API passes its
request session, the UI may leave it out and a short `session_scope()` is opened.

Read functions return plain dicts (JSON-ready, no lazy-loading surprises once the session is
closed); the two creators return the ORM row, as their callers usually want its id at once.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import statistics
import uuid
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Dataset, DatasetKind, Job, JobKind, JobLog, JobStatus, Metric, Model, ModelKind, Role, User
from db.session import session_scope
from db.settings import Settings, safe_join

log = logging.getLogger(__name__)

ALLOWED_EXTENSIONS = ("txt", "jsonl", "csv", "parquet")
# Roles that may create things (datasets, jobs) and stop them. Labelers label and chat only.
WRITER_ROLES = (Role.admin, Role.trainer)
PREVIEW_CHARS = 500       # each preview document is cut to this many characters in Dataset.stats
HISTOGRAM_MAX_BINS = 24   # log2 bins: from 1 character to 16 M characters fits in 24


# ----------------------------------------------------------------------------- errors


class ServiceError(Exception):
    """A request the service refuses, with a message for the person who made it."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field  # the input that is wrong, when one is (e.g. "file", "params.max_steps")


class InvalidInput(ServiceError):
    """The input is wrong (API: 422)."""


class NotFound(ServiceError):
    """An id that does not exist (API: 404)."""


class PermissionDenied(ServiceError):
    """The user's role does not allow this (API: 403)."""


class UploadTooLarge(ServiceError):
    """The upload is over `settings.max_upload_mb` (API: 413)."""


class Conflict(ServiceError):
    """The thing exists but is in a state that does not allow this (API: 409)."""


# ----------------------------------------------------------------------------- helpers


@contextmanager
def _reading(session: Session | None) -> Iterator[Session]:
    """Use the caller's session, or open a short one (the UI's case)."""
    if session is not None:
        yield session
        return
    with session_scope() as own:
        yield own


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def parse_enum(enum_class: type, value: Any, field: str) -> Any:
    """`enum_class(value)`, or InvalidInput listing the allowed values."""
    try:
        return enum_class(_enum_value(value))
    except ValueError:
        allowed = ", ".join(member.value for member in enum_class)
        raise InvalidInput(f"{field} {value!r} is not one of: {allowed}", field=field) from None


def resolve_user(session: Session, who: User | int | str | None) -> User | None:
    """A `User` from a row, an id or a user name (the UI knows only `request.username`)."""
    if who is None or isinstance(who, User):
        return who
    if isinstance(who, int):
        user = session.get(User, who)
    else:
        user = session.scalar(select(User).where(User.name == who))
    if user is None:
        raise PermissionDenied(f"unknown user {who!r}")
    return user


def require_writer(user: User | None, action: str) -> None:
    """Refuse labelers. `None` means an internal caller (CLI, tests, the system itself)."""
    if user is not None and user.role not in WRITER_ROLES:
        raise PermissionDenied(f"user {user.name!r} has the role {_enum_value(user.role)!r}, which cannot "
                               f"{action}; ask an admin for the trainer role")


def get_user(name: str, session: Session | None = None) -> dict | None:
    """{id, name, role} of a user by name, or None (the UI uses it to show who is logged in)."""
    with _reading(session) as s:
        user = s.scalar(select(User).where(User.name == name))
        if user is None:
            return None
        return {"id": user.id, "name": user.name, "role": _enum_value(user.role)}


# ----------------------------------------------------------------------------- datasets


def dataset_to_dict(dataset: Dataset) -> dict:
    return {
        "id": dataset.id,
        "name": dataset.name,
        "kind": _enum_value(dataset.kind),
        "format": dataset.format,
        "original_filename": dataset.original_filename,
        "size_bytes": dataset.size_bytes,
        "stats": dataset.stats or {},
        "owner_id": dataset.owner_id,
        "created_at": dataset.created_at,
    }


def upload_extension(original_filename: str) -> str:
    """The extension of the user's file name, lower-case, if it is one we read; else InvalidInput.

    Only the last path component counts (browsers on Windows send "C:\\...\\file.txt"), and only its
    extension is used afterwards: the name itself never becomes a path.
    """
    base = PurePosixPath((original_filename or "").replace("\\", "/")).name
    extension = base.rsplit(".", 1)[-1].lower() if "." in base else ""
    if extension not in ALLOWED_EXTENSIONS:
        raise InvalidInput(f"file {base or original_filename!r}: unsupported extension "
                           f"{('.' + extension) if extension else '(none)'}; use one of "
                           f"{', '.join('.' + e for e in ALLOWED_EXTENSIONS)}", field="file")
    return extension


def check_upload_size(size_bytes: int, settings: Settings) -> None:
    if size_bytes > settings.max_upload_bytes:
        raise UploadTooLarge(f"file is {size_bytes / 1024 / 1024:.1f} MB; the limit is {settings.max_upload_mb} MB "
                             f"(WORKBENCH_MAX_UPLOAD_MB)", field="file")


def length_histogram(lengths: list[int]) -> dict:
    """A compact summary of document lengths: log2 bins (edges, counts) + min/median/mean/max.

    Power-of-two bins keep the JSON small whatever the corpus size and still show the shape
    (a spike of tiny documents, a long tail) that matters when choosing block_size.
    """
    if not lengths:
        return {"edges": [], "counts": [], "min": 0, "median": 0, "mean": 0.0, "max": 0}
    low = max(0, int(math.floor(math.log2(max(1, min(lengths))))))
    high = max(low + 1, int(math.ceil(math.log2(max(1, max(lengths)) + 1))))
    high = min(high, low + HISTOGRAM_MAX_BINS)
    edges = [2 ** k for k in range(low, high + 1)]
    counts = [0] * (len(edges) - 1)
    for length in lengths:
        index = int(math.floor(math.log2(max(1, length)))) - low
        counts[min(max(index, 0), len(counts) - 1)] += 1
    return {"edges": edges, "counts": counts, "min": min(lengths), "median": statistics.median(lengths),
            "mean": round(statistics.fmean(lengths), 1), "max": max(lengths)}


def _corpus_stats(path: Path, original_filename: str) -> dict:
    """Validate a text corpus with `llm.corpus.inspect_corpus`; its error becomes InvalidInput."""
    from llm.corpus import CorpusError, inspect_corpus  # heavy-ish import, only needed on upload

    try:
        report = inspect_corpus(path, preview=5)
    except CorpusError as error:
        raise InvalidInput(_corpus_error_message(error, path, original_filename), field="file") from error
    lengths = list(report.get("document_lengths") or [])
    stats = {key: value for key, value in report.items() if key not in ("document_lengths", "preview")}
    stats["preview"] = [text[:PREVIEW_CHARS] for text in report.get("preview", [])]
    stats["length_histogram"] = length_histogram(lengths)
    return stats


def _corpus_error_message(error: Exception, stored_path: Path, original_filename: str) -> str:
    """The corpus error with the user's file name in place of our storage path (ours means nothing to them)."""
    line, problem = getattr(error, "line", None), getattr(error, "problem", None)
    if problem is not None:
        where = f", line {line}" if line is not None else ""
        return f"{original_filename}{where}: {problem}"
    return str(error).replace(str(stored_path), original_filename).replace(stored_path.name, original_filename)


def store_dataset_upload(session: Session, settings: Settings, source_path: str | os.PathLike,
                         original_filename: str, name: str | None, kind: str | DatasetKind,
                         owner_id: int | str | User | None) -> Dataset:
    """Validate an uploaded file and store it as a Dataset row + data_dir/datasets/<id>/original.<ext>.

    All or nothing: the file is copied into a staging directory, validated there (with its real
    extension, which is how the corpus reader picks a format), the row is flushed to get its id, the
    staging directory is renamed to datasets/<id>, and only then is the session committed. Any error
    on the way removes the directory and rolls back the row.
    """
    owner = resolve_user(session, owner_id)
    require_writer(owner, "upload datasets")
    kind = parse_enum(DatasetKind, kind, "kind")
    extension = upload_extension(original_filename)
    display_name = PurePosixPath((original_filename or "").replace("\\", "/")).name
    name = (name or "").strip() or display_name.rsplit(".", 1)[0]
    if len(name) > 200:
        raise InvalidInput(f"name is {len(name)} characters; the limit is 200", field="name")
    size = os.path.getsize(source_path)
    check_upload_size(size, settings)
    if size == 0:
        raise InvalidInput(f"{display_name}: the file is empty", field="file")

    datasets_root = safe_join(settings.data_dir, "datasets")
    datasets_root.mkdir(parents=True, exist_ok=True)
    # Staging name is ours (a uuid), never derived from the user's file name.
    staging = safe_join(datasets_root, f".upload-{uuid.uuid4().hex}")
    final_dir: Path | None = None
    try:
        staging.mkdir()
        stored = safe_join(staging, f"original.{extension}")
        shutil.copyfile(source_path, stored)
        stats: dict[str, Any] = {"bytes": size}
        if kind == DatasetKind.text:
            stats = _corpus_stats(stored, display_name)
        dataset = Dataset(name=name, kind=kind, format=extension, path="", original_filename=display_name[:255],
                          size_bytes=size, stats=stats, owner_id=owner.id if owner else None)
        session.add(dataset)
        session.flush()  # assigns the id the directory is named after
        final_dir = safe_join(datasets_root, str(dataset.id))
        if final_dir.exists():
            # Left over from a database that was reset while the data dir was kept: never mix the two.
            shutil.rmtree(final_dir)
        os.replace(staging, final_dir)
        dataset.path = f"datasets/{dataset.id}/original.{extension}"  # relative to the data dir, POSIX form
        session.commit()
    except BaseException:
        session.rollback()
        shutil.rmtree(staging, ignore_errors=True)
        if final_dir is not None:
            shutil.rmtree(final_dir, ignore_errors=True)
        raise
    log.info("dataset %s stored: %s (%s, %d bytes)", dataset.id, name, kind.value, size)
    return dataset


def list_datasets(kind: str | None = None, session: Session | None = None) -> list[dict]:
    """All datasets, newest first; optionally only one kind."""
    with _reading(session) as s:
        query = select(Dataset).order_by(Dataset.id.desc())
        if kind:
            query = query.where(Dataset.kind == parse_enum(DatasetKind, kind, "kind"))
        return [dataset_to_dict(d) for d in s.scalars(query)]


def get_dataset(dataset_id: int, session: Session | None = None) -> dict:
    with _reading(session) as s:
        dataset = s.get(Dataset, dataset_id)
        if dataset is None:
            raise NotFound(f"dataset {dataset_id} does not exist")
        return dataset_to_dict(dataset)


# ----------------------------------------------------------------------------- jobs


def _job_summary(job: Job, owner_name: str | None = None) -> dict:
    return {
        "id": job.id,
        "kind": _enum_value(job.kind),
        "status": _enum_value(job.status),
        "priority": job.priority,
        "progress": job.progress or 0.0,
        "params": job.params or {},
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "heartbeat_at": job.heartbeat_at,
        "error": job.error,
        "worker_host": job.worker_host,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "dataset_id": job.dataset_id,
        "input_model_id": job.input_model_id,
        "output_model_id": job.output_model_id,
        "owner_id": job.owner_id,
        "owner": owner_name,
    }


def submit_job(session: Session, kind: str | JobKind, params: dict | None, owner: User | int | str | None,
               priority: int = 0) -> Job:
    """Create a queued Job row (validated by `worker.jobs.create_job`, which commits), then enqueue its id.

    The id goes to the queue only after the commit, so a worker can never receive an id it cannot
    read. If the broker is unreachable the row stays queued (the database is the source of truth)
    and `requeue_orphans()` or the reaper sends it later; the caller still gets the job.
    """
    from worker.jobs import JobParamsError, create_job, enqueue

    user = resolve_user(session, owner)
    require_writer(user, "submit jobs")
    kind = parse_enum(JobKind, kind, "kind")
    if not isinstance(params, dict):
        raise InvalidInput("params must be an object of parameter names to values", field="params")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidInput(f"priority must be a whole number, got {priority!r}", field="priority")
    try:
        job = create_job(session, kind, params, owner_id=user.id if user else None, priority=priority)
    except JobParamsError as error:
        session.rollback()
        # "kind" and "priority" are top-level fields of the request; everything else is a param.
        field = error.field if error.field in ("kind", "priority", "params") else f"params.{error.field}"
        raise InvalidInput(f"{error.field}: {error.message}", field=field) from error
    except BaseException:
        session.rollback()
        raise
    if not enqueue(job.id):
        session.add(JobLog(job_id=job.id, line="the queue was unreachable; the job waits in the database "
                                               "and is sent when the broker is back"))
        session.commit()
    return job


def list_jobs(status: str | None = None, kind: str | None = None, limit: int = 200,
              session: Session | None = None) -> list[dict]:
    """Jobs newest first (one query with the owner's name; no metrics, so it stays fast for polling)."""
    with _reading(session) as s:
        query = (select(Job, User.name).outerjoin(User, User.id == Job.owner_id)
                 .order_by(Job.id.desc()).limit(max(1, min(int(limit), 1000))))
        if status:
            query = query.where(Job.status == parse_enum(JobStatus, status, "status"))
        if kind:
            query = query.where(Job.kind == parse_enum(JobKind, kind, "kind"))
        return [_job_summary(job, owner_name) for job, owner_name in s.execute(query)]


def _get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


def latest_metrics(session: Session, job_id: int) -> dict[str, dict]:
    """{name: {"step", "value"}} of the most recent record of each metric of a job."""
    newest_ids = select(func.max(Metric.id)).where(Metric.job_id == job_id).group_by(Metric.name)
    rows = session.scalars(select(Metric).where(Metric.id.in_(newest_ids)))
    return {m.name: {"step": m.step, "value": m.value} for m in rows}


def get_job_detail(job_id: int, session: Session | None = None) -> dict:
    """Everything the job page shows at once: the summary plus the latest value of each metric.

    `metrics` maps name -> latest value; `metric_steps` maps name -> the step it was recorded at
    (eval metrics such as val_loss arrive less often than loss, so their steps differ).
    """
    with _reading(session) as s:
        job = _get_job(s, job_id)
        owner_name = s.scalar(select(User.name).where(User.id == job.owner_id)) if job.owner_id else None
        detail = _job_summary(job, owner_name)
        latest = latest_metrics(s, job_id)
        detail["metrics"] = {name: item["value"] for name, item in latest.items()}
        detail["metric_steps"] = {name: item["step"] for name, item in latest.items()}
        return detail


def job_metrics(job_id: int, name: str | None = None, after_step: int | None = None,
                session: Session | None = None) -> list[dict]:
    """Every metric record of a job in the order written: [{step, name, value}] (for the curves)."""
    with _reading(session) as s:
        _get_job(s, job_id)
        query = select(Metric.step, Metric.name, Metric.value).where(Metric.job_id == job_id)
        if name:
            query = query.where(Metric.name == name)
        if after_step is not None:
            query = query.where(Metric.step > after_step)
        return [{"step": step, "name": metric_name, "value": value}
                for step, metric_name, value in s.execute(query.order_by(Metric.id))]


def job_logs(job_id: int, after_id: int = 0, limit: int = 1000, session: Session | None = None) -> list[dict]:
    """Log lines of a job with id > after_id (so a poller fetches only what is new): [{id, created_at, line}]."""
    with _reading(session) as s:
        _get_job(s, job_id)
        query = (select(JobLog).where(JobLog.job_id == job_id, JobLog.id > after_id)
                 .order_by(JobLog.id).limit(max(1, min(int(limit), 10000))))
        return [{"id": row.id, "created_at": row.created_at, "line": row.line} for row in s.scalars(query)]


def _change_job_state(session: Session, job_id: int, user, action: str, transition) -> dict:
    """Run a worker.jobs state transition for a writer, mapping its errors to the service's."""
    from worker.jobs import JobNotFoundError, JobStateError

    require_writer(resolve_user(session, user), action)
    try:
        transition(session, job_id)
    except JobNotFoundError:
        raise NotFound(f"job {job_id} does not exist") from None
    except JobStateError as error:
        raise Conflict(str(error)) from None
    return get_job_detail(job_id, session=session)


def cancel_job(session: Session, job_id: int, user: User | int | str | None = None) -> dict:
    """Cancel a job: a queued one never starts, a running one checkpoints and stops at its next step."""
    from worker.jobs import request_cancel

    return _change_job_state(session, job_id, user, "cancel jobs", request_cancel)


def resume_job(session: Session, job_id: int, user: User | int | str | None = None) -> dict:
    """Queue a failed or cancelled job again (and enqueue it); it continues from its last checkpoint."""
    from worker.jobs import resume_job as queue_again

    return _change_job_state(session, job_id, user, "resume jobs", queue_again)


# ----------------------------------------------------------------------------- models


def model_to_dict(model: Model) -> dict:
    return {
        "id": model.id,
        "name": model.name,
        "kind": _enum_value(model.kind),
        "tokenizer": model.tokenizer,
        "parent_model_id": model.parent_model_id,
        "job_id": model.job_id,
        "config": model.config or {},
        "owner_id": model.owner_id,
        "created_at": model.created_at,
    }


def list_models(kind: str | None = None, session: Session | None = None) -> list[dict]:
    with _reading(session) as s:
        query = select(Model).order_by(Model.id.desc())
        if kind:
            query = query.where(Model.kind == parse_enum(ModelKind, kind, "kind"))
        return [model_to_dict(m) for m in s.scalars(query)]


def model_dir(settings: Settings, model_id: int, session: Session | None = None) -> tuple[Path, dict]:
    """The directory holding a model's files (inside the data dir) and the model as a dict."""
    with _reading(session) as s:
        model = s.get(Model, model_id)
        if model is None:
            raise NotFound(f"model {model_id} does not exist")
        return safe_join(settings.data_dir, model.path), model_to_dict(model)


# ----------------------------------------------------------------------------- estimates

# Share of the peak matmul FLOP/s a training step really achieves. Small models spend much of a
# step outside big matmuls (optimizer, layer norms, Python), so CPU runs of the tiny preset reach
# well under half of the matmul peak; 0.3 is a middle-of-the-road guess for planning, not a promise.
# The estimate reports the factor it used so the UI can show it.
ASSUMED_UTILISATION = {"cpu": 0.3, "cuda": 0.4}
_DEFAULT_TRAIN = {"batch_size": 16, "block_size": None, "grad_accum": 1, "max_steps": 1000}


_PEAK_FLOPS_CACHE: dict[str, float] = {}


def estimate_peak_flops(device_type: str) -> float:
    """Peak FLOP/s for estimates, measured once per process (the Chat tab measures it before it limits
    this process's torch threads, see web.ui.model_cache).

    GPUs: the data-sheet number when known (`llm.device.peak_flops`). CPUs: a 1024 x 1024 float32
    matmul, which reaches the same FLOP/s as llm.device's 2048 one within a few percent here but
    costs a fraction of a second instead of seconds, so the first estimate in the UI stays quick.
    """
    if device_type not in _PEAK_FLOPS_CACHE:
        from llm.device import measure_matmul_peak_flops, peak_flops

        _PEAK_FLOPS_CACHE[device_type] = (peak_flops(device_type) if device_type == "cuda"
                                          else measure_matmul_peak_flops("cpu", size=1024))
    return _PEAK_FLOPS_CACHE[device_type]


def _train_defaults() -> dict:
    try:
        from llm.train import TrainConfig  # the single source of the training defaults
    except ImportError:
        return dict(_DEFAULT_TRAIN)
    defaults = TrainConfig()
    return {key: getattr(defaults, key, fallback) for key, fallback in _DEFAULT_TRAIN.items()}


def _tokenizer_vocab_size(name: str, data_dir: Path | None) -> int:
    """Vocabulary size of a known tokenizer; only known names are loaded, never a path from a request."""
    from llm.tokenizer import BUILTIN_TOKENIZERS, get_tokenizer
    from worker.jobs import known_tokenizer_names

    names = known_tokenizer_names(data_dir) if data_dir is not None else list(BUILTIN_TOKENIZERS)
    if name not in names:
        raise InvalidInput(f"unknown tokenizer {name!r}; choose one of {', '.join(names)}", field="tokenizer")
    return get_tokenizer(name, data_dir).vocab_size


def estimate_pretrain(params: dict, data_dir: str | os.PathLike | None = None) -> dict:
    """Model size and a rough run time for a pretrain job's params, before it is submitted.

    - params_count: non-embedding-position parameter count of GPT(config), built on PyTorch's "meta"
      device so no memory is allocated even for the 124M preset.
    - tokens_per_step = batch_size * block_size * grad_accum.
    - est_seconds = flops_per_token * tokens_per_step * max_steps / (peak FLOP/s * utilisation), where
      flops_per_token is the model's own 6N + attention count, the peak is this machine's measured
      matmul FLOP/s (`estimate_peak_flops`, measured once per process) or a GPU's data-sheet peak,
      and utilisation is ASSUMED_UTILISATION (see above). Data loading and evaluation are not counted.
    """
    import torch

    from llm.model import GPT, config_from_preset

    defaults = _train_defaults()
    preset = params.get("preset") or "tiny"
    tokenizer = params.get("tokenizer") or "gpt2"
    values: dict[str, int | None] = {}
    for key in ("batch_size", "block_size", "grad_accum", "max_steps"):
        raw = params.get(key, defaults[key])
        if raw is None or raw == "":
            values[key] = None
            continue
        try:
            values[key] = int(raw)
        except (TypeError, ValueError):
            raise InvalidInput(f"{key} must be a whole number, got {raw!r}", field=key) from None
        if values[key] < 1:
            raise InvalidInput(f"{key} must be at least 1, got {raw!r}", field=key)
    vocab_size = _tokenizer_vocab_size(tokenizer, Path(data_dir) if data_dir else None)
    try:
        config = config_from_preset(preset, vocab_size, block_size=values["block_size"])
    except ValueError as error:
        raise InvalidInput(str(error), field="preset") from None
    with torch.device("meta"):
        model = GPT(config)
    block_size = config.block_size
    tokens_per_step = (values["batch_size"] or 1) * block_size * (values["grad_accum"] or 1)
    flops_per_token = model.flops_per_token(block_size)

    device = str(params.get("device") or "auto")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    device_type = "cuda" if use_cuda and torch.cuda.is_available() else "cpu"
    peak = estimate_peak_flops(device_type)
    utilisation = ASSUMED_UTILISATION[device_type]
    max_steps = values["max_steps"] or 0
    est_seconds = flops_per_token * tokens_per_step * max_steps / (peak * utilisation)
    return {
        "params_count": model.num_params(),
        "params_total": model.num_params(non_embedding=False),
        "tokens_per_step": tokens_per_step,
        "total_tokens": tokens_per_step * max_steps,
        "flops_per_token": flops_per_token,
        "est_seconds": est_seconds,
        "device": device_type,
        "peak_flops": peak,
        "utilisation": utilisation,
        "config": config.to_dict(),
    }
