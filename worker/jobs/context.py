"""What a job handler works with: `JobContext` (the job's snapshot, paths, progress callbacks),
`Outcome` (what it returns), and the prepared-data cache several kinds share.

Handlers live with their kind's declaration in `worker/kinds/`; `worker.runtime.runner` builds the context,
calls the handler and records the outcome.
"""

from __future__ import annotations

import fcntl
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from db.models import Dataset, Model
from db.settings import Settings, safe_join
from worker.jobs.progress_writer import DirectWriter, LogRecord, MetricRecord, ProgressRecord, ProgressWriter

logger = logging.getLogger(__name__)

# Progress lines for work counted in items (prepare) are written at most this often.
PROGRESS_LOG_INTERVAL_S = 5.0


# ----------------------------------------------------------------------------- the context handlers get

class StopSignal(Protocol):
    """What tells a running job to stop (the runtime's `JobHeartbeat`: cancelled, lost, or the worker shutting
    down); a handler only ever asks."""

    def should_stop(self) -> bool: ...


@dataclass
class JobContext:
    """What a handler needs: the job's snapshot, paths, and the callbacks that report progress."""

    job_id: int
    attempt: int
    kind: str               # the registry's name (worker.kinds.KINDS)
    params: dict[str, Any]
    owner_id: int | None
    dataset: Dataset | None
    input_model: Model | None  # the model_id it starts from (SFT, reward, DPO, generate)
    run_dir: Path
    settings: Settings
    session: Session
    heartbeat: StopSignal
    writer: ProgressWriter | DirectWriter
    _first_metrics_step: int | None = field(default=None, init=False)
    _last_progress_log: float = field(default=0.0, init=False)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def input_model_dir(self) -> Path:
        """The directory of the model the job starts from; a clear error when it has gone."""
        return stored_path(self, self.input_model, "model")

    def should_stop(self) -> bool:
        return self.heartbeat.should_stop()

    def log(self, line: str) -> None:
        """One JobLog line, written by the background writer (the UI shows it within moments)."""
        logger.info("job %s: %s", self.job_id, line)
        self.writer.put(LogRecord(str(line)))

    def set_progress(self, progress: float) -> None:
        self.writer.put(ProgressRecord(min(max(float(progress), 0.0), 1.0)))

    def on_metrics(self, record: dict) -> None:
        """Training callback: one Metric row per numeric value, plus the job's progress."""
        step = int(record["step"])
        values = {name: float(value) for name, value in record.items()
                  if name not in ("step", "progress") and isinstance(value, (int, float))
                  and not isinstance(value, bool) and math.isfinite(value)}
        if values:
            self.writer.put(MetricRecord(step, values))
        if "progress" in record:
            self.set_progress(record["progress"])

    def on_progress(self, done: int, total: int | None) -> None:
        """Item-count callback (prepare): a log line every few seconds, and progress when known."""
        now = time.monotonic()
        finished = total is not None and done >= total
        if finished or now - self._last_progress_log >= PROGRESS_LOG_INTERVAL_S:
            self._last_progress_log = now
            self.log(f"{done:,} documents processed" + (f" of {total:,}" if total else ""))


@dataclass
class Outcome:
    """What a handler returns: whether it stopped early, and how to record a success."""

    stopped: bool = False
    summary: str = ""
    # Called inside the transaction that marks the job succeeded; returns extra Job column values.
    finalize: Callable[[Session], dict[str, Any]] | None = None


# ----------------------------------------------------------------------------- prepared data cache

@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on this machine (two jobs preparing the same data, or training the
    same tokenizer)."""
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


def dataset_path(ctx: JobContext) -> Path:
    """The stored file of the job's dataset (inside the data dir); a clear error when it has gone."""
    return stored_path(ctx, ctx.dataset, "dataset")


def stored_path(ctx: JobContext, row: Dataset | Model | None, noun: str) -> Path:
    """Where a dataset's file or a model's directory is, checked to exist."""
    if row is None:
        raise ValueError(f"this job has no {noun}")
    path = safe_join(ctx.data_dir, row.path)
    if not path.exists():
        raise FileNotFoundError(f"the files of {noun} {row.id} ({row.name!r}) are missing from the data directory")
    return path


def ensure_prepared(ctx: JobContext, tokenizer: str, *, force: bool = False, **prepare_options) -> Path | None:
    """Token files of the job's dataset for `tokenizer`, preparing them unless cached (or `force`).

    None if the job was cancelled while preparing (nothing half-written is left)."""
    from llm.prepare import prepare

    out_dir = prepared_dir_for(ctx.settings, ctx.dataset.id, tokenizer)
    with file_lock(out_dir.with_name(out_dir.name + ".lock")):
        if not force and (out_dir / "stats.json").is_file():
            ctx.log(f"using the prepared data of dataset {ctx.dataset.id} for tokenizer {tokenizer}")
            return out_dir
        ctx.log(f"preparing dataset {ctx.dataset.id} with tokenizer {tokenizer}")
        stats = prepare(dataset_path(ctx), tokenizer, out_dir, data_dir=ctx.data_dir,
                        on_progress=ctx.on_progress, should_stop=ctx.should_stop, **prepare_options)
        if stats.get("stopped"):
            return None
        ctx.log(f"prepared {stats['documents']:,} documents, {stats['tokens']:,} tokens "
                f"(train {stats['train']['tokens']:,}, val {stats['val']['tokens']:,}; "
                f"{stats['duplicates_removed']:,} duplicates removed)")
    return out_dir
