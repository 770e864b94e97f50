"""Checks that a training job fits before it is queued, shared by the training kinds' `check` hooks (so the
API, the CLI and the Train forms all get them):

  - memory: the run's estimated peak (a kind's `estimate`, a `RunEstimate` from `llm.memory`'s formula) against
    what the workers have (the largest capacity the live workers report in their presence beats, else this
    machine's); a job that cannot fit would be killed for memory after waiting in the queue, and would hold the
    queue while it fails. The Train form's preview calls the same `estimate`, so it shows the figure compared;
  - schedule: warmup / eval_every / checkpoint_every left at their defaults shrink with a short run, and
    a warmup as long as the run is refused (`llm.train_config.fit_schedule_to_steps`, `schedule_problems`);
  - data: a text dataset too small for one block of block_size tokens is refused in the form's terms.

Messages name the form's fields, never a server path or a CLI flag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from db.models import Dataset
from db.settings import Settings, get_settings
from llm.memory import MemoryEstimate, human_gb
from llm.params import Setting
from llm.train_config import SCHEDULE_FIELDS, fit_schedule_to_steps, schedule_problems
from worker.jobs.messages import broker_url_of, job_queue_of
from worker.jobs.devices import devices_refusal, requested_devices, waiting_note, worker_slots
from worker.jobs.params import JobParamsError
from worker.jobs.presence import seen_workers

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class RunEstimate:
    """A kind's estimate of a run before it is queued (its `estimate.py`): the peak memory the submit check
    compares with what the workers have, where it runs, its FLOPs, and the figures a Train form shows."""

    memory: MemoryEstimate
    device_type: str                 # "cuda" or "cpu": where the job will run (`device_type`)
    flops: float                     # training FLOPs of the whole run (a form turns them into a time)
    model_field: str                 # the param a refusal names when the model, not the batch, is most of it
    model_hint: str                  # what to do then
    figures: dict[str, Any] = field(default_factory=dict)  # parameter counts, tokens per step, ...
    shape: Any = None                # llm.throughput.ProbeShape of one micro-batch step: what its time is read for
    once_forward_batches: float = 0  # batches of that shape passed forward once before training (a full DPO or KTO
                                     # run's reference log-probs): each an evaluation batch's time
    watch_tokens: int = 0            # answer tokens a degeneration watch samples at the start and at each evaluation


# Used only when no live worker has reported its capacity (none started yet, or the broker cannot be read):
# the check then assumes the workers run on a machine like this one, and says so in every refusal.
LOCAL_MEMORY_SOURCE = {"cuda": "this machine's GPU; no worker has reported its own",
                       "cpu": "this machine's RAM; no worker has reported its own"}


def live_worker_capacities(settings: Settings) -> list[dict]:
    """The live workers of the job queue that reported a capacity (`worker.jobs.presence.seen_workers` entries);
    [] when the broker cannot be read (the check then falls back to this machine, and says so)."""

    queue = job_queue_of(settings)
    try:
        workers = seen_workers(broker_url_of(settings), queue, settings.stale_after_seconds)
    except Exception as error:  # an unreachable broker must not refuse a job; the fallback is said in the message
        logger.info("worker capacities not read (broker unreachable): %s", error)
        return []
    return [worker for worker in workers if worker["alive"] and isinstance(worker.get("capacity"), dict)]


def device_type(params: dict[str, Any], settings: Settings) -> str:
    """"cuda" or "cpu": where the job will run (its own device, else WORKBENCH_DEVICE). "auto" picks CUDA where
    it is: on a live worker that reported a GPU, else (no worker reported) on this machine."""
    device = str(params.get("device") or settings.device or "auto").lower()
    if device.startswith("cuda"):
        return "cuda"
    if device == "auto":
        workers = live_worker_capacities(settings)
        if workers:
            return "cuda" if any(worker["capacity"].get("gpu_memory_bytes") for worker in workers) else "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def gpu_index(params: dict[str, Any] | None) -> int:
    """The GPU a job runs on: N of a pinned "cuda:N", else 0 (what "cuda" means to torch)."""
    pinned = str((params or {}).get("device") or "cuda")
    return int(pinned.split(":", 1)[1]) if ":" in pinned else 0


def worker_memory(device: str, params: dict[str, Any] | None = None,
                  settings: Settings | None = None) -> tuple[int, str]:
    """(bytes a worker has for one process of a job on `device`, where that figure comes from).

    The largest live worker's figure (its RAM, or the GPU the job asks for) when workers reported theirs:
    any worker may take the job. Else this machine's. Totals, not what is free now: a job that fits the
    machine waits for the one running before it.

    A job on `devices` N > 1 runs N processes, each with the whole model (data parallel): per device. Only the
    workers with N device slots count; on GPUs the figure is each one's smallest GPU (a rank may get any), on the
    CPU its RAM divided by N (the processes share it).
    """
    settings = settings or get_settings()
    workers = live_worker_capacities(settings)
    index = gpu_index(params)
    count = requested_devices(params)
    if count > 1:
        workers = [worker for worker in workers if len(worker_slots(worker)) >= count]
    if device == "cuda" and count > 1:
        figures = [(min(gpus), worker) for worker in workers if (gpus := worker["capacity"].get("gpu_memory_bytes"))]
        what = "smallest GPU"
    elif device == "cuda":
        figures = [(gpus[index], worker) for worker in workers
                   if len(gpus := worker["capacity"].get("gpu_memory_bytes") or []) > index]
        what = f"GPU {index}" if index else "GPU"
    elif count > 1:
        figures = [(worker["capacity"]["ram_bytes"] // count, worker) for worker in workers
                   if isinstance(worker["capacity"].get("ram_bytes"), int)]
        what = f"RAM per process (its RAM ÷ {count} processes)"
    else:
        figures = [(worker["capacity"]["ram_bytes"], worker) for worker in workers
                   if isinstance(worker["capacity"].get("ram_bytes"), int)]
        what = "RAM"
    if figures:
        available, largest = max(figures, key=lambda figure: figure[0])
        listed = f"{len(workers)} live worker{'s' if len(workers) > 1 else ''}"
        if count > 1:
            listed += f" with {count} devices"
        return available, f"the {what} of worker {largest['node']}, the largest of {listed}"
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(index).total_memory, LOCAL_MEMORY_SOURCE["cuda"]
    import psutil

    if count > 1:
        return psutil.virtual_memory().total // count, f"{LOCAL_MEMORY_SOURCE['cpu']}, shared by {count} processes"
    return psutil.virtual_memory().total, LOCAL_MEMORY_SOURCE["cpu"]


def batch_field(params: dict[str, Any], declared: dict[str, Setting]) -> str:
    """batch_size or block_size: the one further above its default (what a smaller batch should lower)."""
    def overshoot(name: str) -> float:
        default = declared[name].default or 1
        return params[name] / default

    return "block_size" if overshoot("block_size") > overshoot("batch_size") else "batch_size"


def check_memory(estimate: RunEstimate | None, params: dict[str, Any], settings: Settings, *,
                 declared: dict[str, Setting]) -> None:
    """JobParamsError when `estimate`'s memory is above what the workers have: on the batch's field when the
    batch (activations, logits) is most of it, else on the estimate's `model_field` with its `model_hint`.
    No estimate (nothing to estimate from): nothing to refuse."""
    if estimate is None:
        return
    memory = estimate.memory
    available, source = worker_memory(estimate.device_type, params, settings)
    if memory.total <= available:
        return
    if memory.per_batch >= memory.total - memory.per_batch:
        field_name = batch_field(params, declared)
        hint = "lower batch_size or block_size (raise grad_accum to keep the effective batch)"
    else:
        field_name, hint = estimate.model_field, estimate.model_hint
    memory_kind = "GPU memory" if estimate.device_type == "cuda" else "RAM"
    if requested_devices(params) > 1:
        memory_kind += " per device"
    raise JobParamsError(field_name, f"this run needs about {human_gb(memory.total)} of {memory_kind} "
                                     f"(batch_size {params['batch_size']} × block_size {params['block_size']}: "
                                     f"{human_gb(memory.per_batch)}; the model and its optimizer: "
                                     f"{human_gb(memory.total - memory.per_batch)}); the workers have "
                                     f"{human_gb(available)} ({source}): {hint}")


# ----------------------------------------------------------------------------- devices

def check_devices(params: dict[str, Any], settings: Settings) -> str | None:
    """A job's `devices` against the live workers' slots: JobParamsError("devices") when every live worker has
    fewer ("4 asked, the largest worker has 2 (workbench-1@a)"). Returns what the job will wait for when no
    worker is alive to say (a job on more than one device), else None."""
    asked = requested_devices(params)
    if asked == 1:  # every worker has a slot
        return None
    workers = live_worker_capacities(settings)
    refusal = devices_refusal(asked, workers)
    if refusal is not None:
        raise JobParamsError("devices", refusal)
    return waiting_note(asked) if not workers else None


# ----------------------------------------------------------------------------- schedule

def check_schedule(params: dict[str, Any], declared: dict[str, Setting]) -> None:
    """Shrink the step-counted defaults for a short run (written into `params`, so the stored row says
    what runs), then refuse a schedule that makes the run pointless."""
    defaults = {name: declared[name].default for name in ("max_steps", *SCHEDULE_FIELDS)}
    params.update(fit_schedule_to_steps(params, defaults))
    for problem in schedule_problems(params):
        if problem.refuses:
            raise JobParamsError(problem.field, problem.message)


# ----------------------------------------------------------------------------- data

def check_text_dataset_fits_block(session: Session, params: dict[str, Any], settings: Settings) -> None:
    """A text dataset must hold at least block_size + 1 tokens (one block of inputs and its targets).

    Exact when the dataset was already tokenized with this tokenizer (the prepared data's stats, both
    splits); otherwise the bound from its upload stats: a byte-level tokenizer makes at most one token
    per byte, plus one end-of-text token per document, so fewer than that is sure to fail.
    """
    from worker.jobs.context import prepared_dir_for

    dataset = session.get(Dataset, params["dataset_id"])
    block_size = params["block_size"]
    needed = block_size + 1
    prepared = _prepared_stats(prepared_dir_for(settings, dataset.id, params["tokenizer"]))
    if prepared is not None:
        for split in ("train", "val"):
            tokens = (prepared.get(split) or {}).get("tokens")
            # An empty val part is skipped by the loop (no evaluation); a short one fails like train.
            too_short = isinstance(tokens, int) and tokens < needed and (tokens > 0 or split == "train")
            if too_short:
                raise JobParamsError("block_size", _too_small(dataset, f"its {split} part holds {tokens:,} tokens "
                                                                       f"with tokenizer {params['tokenizer']}",
                                                              block_size, tokens))
        return
    stats = dataset.stats or {}
    at_most = (stats.get("bytes") or 0) + (stats.get("documents") or 0)
    if isinstance(stats.get("bytes"), int) and at_most < needed:
        raise JobParamsError("block_size", _too_small(dataset, f"it holds {stats['bytes']:,} bytes of text "
                                                               f"(at most {at_most:,} tokens)", block_size, at_most))


def _prepared_stats(directory: Path) -> dict | None:
    import json

    try:
        return json.loads((directory / "stats.json").read_text())
    except (OSError, ValueError):
        return None


def _too_small(dataset: Dataset, holds: str, block_size: int, tokens: int) -> str:
    largest = tokens - 1
    advice = (f"lower block_size to {largest} or less, or choose a larger dataset" if largest >= 8
              else "choose a larger dataset")
    return (f"dataset #{dataset.id} ({dataset.name!r}) is too small for block_size {block_size}: {holds}, "
            f"and one block needs {block_size + 1}; {advice}")
