"""The one training loop: pretraining, SFT (full or LoRA), reward modelling and DPO all run through `train`.

What differs between those jobs is an `Objective` (how a batch becomes a loss, how to evaluate) and a
batch source (where batches come from); everything else lives here once: AdamW with decoupled weight
decay on matrices only, linear warmup + cosine decay, gradient accumulation, clipping, bf16 autocast
on GPUs, tokens/s and MFU, metrics to `metrics.jsonl` and to a callback, cooperative stopping, and
checkpoints that resume exactly.

Resuming exactly: the checkpoint holds the trainable weights, the optimizer state, the step, every
RNG (torch, numpy, python, CUDA) and the batch source's state. The learning rate is a pure function of
the step, so there is no scheduler state. On the CPU in float32 the loss after resuming equals the
uninterrupted run's bit for bit (tests/llm/test_train.py checks it).

Checkpoint layout, `<out_dir>/checkpoint/` (written to `checkpoint.tmp/`, then renamed):
  weights.safetensors  trainable parameters + persistent buffers (a LoRA run stores only the adapter)
  state.pt             optimizer, step, RNG and batch states: tensors and plain Python values only,
                       read back with torch.load(weights_only=True), which unpickles nothing else
  checkpoint.json      step and config, for people and tools
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from llm import distributed
from llm.atomic_files import atomic_write_text
from llm.device import autocast_context, mfu, peak_flops, pick_device, resolve_dtype
from llm.learning_watch import LearningWatch, clear_verdict, save_verdict
from llm.sharding import (as_full, full_optimizer_state, full_tensors, shard_optimizer_state_like,
                          shard_weights_like)
from llm.threads import thread_note
from llm.train_config import TrainConfig  # re-exported: `from llm.train import TrainConfig` keeps working

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"


class Objective(Protocol):
    """How a batch becomes a loss. Implementations may also define `evaluate(model) -> dict`
    (called in eval mode under no_grad, e.g. returning {"val_loss", "val_bpb"}), and `watch_learning = False`
    when their loss is not one the not-learning watch can judge (DPO's)."""

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict]:
        """The scalar loss to minimise and extra metrics (tensors or floats, averaged over micro-batches)."""

    def tokens_in(self, batch: Any) -> int:
        """Tokens this batch trains on, for tokens/s and MFU."""


class BatchSource(Protocol):
    """Where batches come from; its state is saved in checkpoints (tensors and plain values only)."""

    def next_batch(self) -> Any: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


# ----------------------------------------------------------------------------- pieces of the loop

def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (1-based): linear warmup to lr, then cosine to min_lr."""
    warmup = min(config.warmup, config.max_steps)
    if step <= warmup:
        return config.lr * step / warmup
    progress = min((step - warmup) / (config.max_steps - warmup), 1.0)  # (0, 1]: reaches min_lr at max_steps
    return config.final_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (config.lr - config.final_lr)


def make_optimizer(params: list[nn.Parameter], config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW that decays matrices (embeddings, linear weights) but not biases or norm gains (nanoGPT)."""
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("there are no trainable parameters")
    # The fused kernel updates every tensor in one pass, on CUDA and on the CPU alike (measured on the
    # 124M shape on 2 CPU cores: the optimizer step 0.44 s -> 0.09 s; bench/README.md).
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2),
                             fused=device.type in ("cuda", "cpu"))


def move_to(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a batch (a tensor, or tuples/lists/dicts of them) to `device`."""
    if isinstance(batch, torch.Tensor):
        if device.type == "cuda":  # pinned memory lets the copy overlap with compute
            return batch.pin_memory().to(device, non_blocking=True)
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to(value, device) for value in batch)
    return batch


def should_compile(config: TrainConfig, device: torch.device) -> bool:
    setting = str(config.compile).lower()
    if setting == "auto":
        return device.type == "cuda"
    if setting in ("true", "1", "on", "yes"):
        return True
    if setting in ("false", "0", "off", "no"):
        return False
    raise ValueError(f"compile must be 'auto', true or false, got {config.compile!r}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _as_float(value) -> float:
    return value.item() if isinstance(value, torch.Tensor) else float(value)


def format_progress(record: dict, max_steps: int) -> str:
    """One line a person can read: `step 120/500 | loss 3.2100 | val_bpb 1.520 | 8,400 tok/s | MFU 41.0%`."""
    parts = [f"step {record['step']}/{max_steps}", f"loss {record['loss']:.4f}"]
    parts += [f"{key} {value:.4f}" for key, value in record.items()
              if key.startswith("val_") and isinstance(value, float)]
    parts.append(f"{record['tokens_per_s']:,.0f} tok/s")
    if record.get("mfu") is not None:
        parts.append(f"MFU {100 * record['mfu']:.1f}%")
    return " | ".join(parts)


# ----------------------------------------------------------------------------- metrics file

class MetricsLog:
    """`metrics.jsonl`: one JSON object per log step, appended as training goes."""

    def __init__(self, path: Path):
        self.path = path

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step`: after a resume those steps run again and must not appear twice."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


class NoMetrics(MetricsLog):
    """What ranks other than 0 keep instead of metrics.jsonl: nothing (rank 0 alone writes it)."""

    def __init__(self):
        super().__init__(Path(os.devnull))

    def clear(self) -> None: ...

    def truncate_after(self, step: int) -> None: ...

    def append(self, record: dict) -> None: ...

    def read(self) -> list[dict]:
        return []


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_dir(out_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint under out_dir, or None. A crash between the two renames in
    `save_checkpoint` leaves only `checkpoint.old`, which is then the latest complete one."""
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        path = Path(out_dir) / name
        if (path / "checkpoint.json").is_file():
            return path
    return None


def checkpoint_step(out_dir: str | os.PathLike) -> int:
    """The step of the complete checkpoint under out_dir (0 when there is none): where a resume starts."""
    path = checkpoint_dir(out_dir)
    if path is None:
        return 0
    return int(json.loads((path / "checkpoint.json").read_text()).get("step", 0))


def _trainable_state(model: nn.Module, params: list[nn.Parameter]) -> dict[str, torch.Tensor]:
    """Trainable parameters by name (a tied weight once) plus persistent buffers; frozen weights are
    left out because they come back from wherever the caller built the model (e.g. the base model)."""
    wanted = {id(p) for p in params}
    tensors = {name: p for name, p in model.named_parameters() if id(p) in wanted}
    if len(tensors) != len(wanted):
        raise ValueError("trainable_params must be parameters of the model being trained")
    all_param_names = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    for name, value in model.state_dict().items():
        if name not in all_param_names:
            tensors[name] = value
    return tensors


def _rng_states(device: torch.device) -> dict:
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              # numpy arrays are not on the weights_only allow-list, so the key array travels as a tensor
              "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                        "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)}}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(out_dir: Path, model: nn.Module, params: list[nn.Parameter],
                    optimizer: torch.optim.Optimizer, batches: BatchSource, step: int,
                    tokens_seen: int, config: TrainConfig, device: torch.device, write: bool = True) -> Path:
    """Write the resumable state to `checkpoint.tmp/`, then swap it in with renames.

    Weights and optimizer state are written in full, as a single process holds them, also from a sharded (FSDP)
    run: there every rank calls this (gathering is a collective) and only the one with `write` writes."""
    final = out_dir / CHECKPOINT_DIR
    tensors = full_tensors(_trainable_state(model, params), keep=write)
    optimizer_state = full_optimizer_state(optimizer, keep=write)
    if not write:
        return final
    tmp = out_dir / (CHECKPOINT_DIR + ".tmp")
    old = out_dir / (CHECKPOINT_DIR + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "weights.safetensors"))
    torch.save({"step": step, "tokens_seen": tokens_seen, "optimizer": optimizer_state,
                "batches": batches.state_dict(), "rng": _rng_states(device)}, tmp / "state.pt")
    (tmp / "checkpoint.json").write_text(json.dumps({"step": step, "config": asdict(config)}, indent=2))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: nn.Module, params: list[nn.Parameter],
                    optimizer: torch.optim.Optimizer, batches: BatchSource) -> dict:
    """Restore weights, optimizer, RNGs and data position; returns {"step", "tokens_seen"}. A sharded (FSDP)
    model takes its slices of the full state the checkpoint holds."""
    tensors = load_file(str(path / "weights.safetensors"), device="cpu")
    expected = _trainable_state(model, params).keys()
    try:
        _, unexpected = model.load_state_dict(shard_weights_like(tensors, model), strict=False)
    except RuntimeError as error:  # shape mismatch: another preset, another vocabulary
        raise ValueError(f"the checkpoint in {path} was written for a different model ({error}); "
                         f"start fresh with resume=False or use another output directory") from error
    missing = sorted(set(expected) - set(tensors))
    if unexpected or missing:
        raise ValueError(f"the checkpoint in {path} does not match this model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}; start fresh with resume=False or another output directory")
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    # Moves the moments to the parameters' device (a sharded run's: this rank's slices of them).
    optimizer.load_state_dict(shard_optimizer_state_like(state["optimizer"], optimizer))
    batches.load_state_dict(state["batches"])
    _restore_rng_states(state["rng"])
    return {"step": int(state["step"]), "tokens_seen": int(state["tokens_seen"])}


# ----------------------------------------------------------------------------- the loop

def train(model: nn.Module, objective: Objective, batches: BatchSource, config: TrainConfig,
          out_dir: str | os.PathLike, *,
          on_metrics: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          trainable_params: Iterable[nn.Parameter] | None = None,
          flops_per_token: float | None = None,
          save_model_fn: Callable[[nn.Module, Path], Any] | None = None,
          resume: bool = True,
          lr_schedule: Callable[[int], float] | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Train `model` on `objective` for config.max_steps optimizer steps; returns a result dict.

    trainable_params: what the optimizer updates and the checkpoint stores (default: every parameter
        with requires_grad; LoRA passes the adapter's).
    flops_per_token: training FLOPs per token for MFU (default: model.flops_per_token(block_size) if the
        model has it, else MFU is not reported).
    save_model_fn(model, out_dir): writes the final model when training finishes (pretraining:
        llm.checkpoint.save_model; LoRA: the adapter). Not called when stopped early.
    resume: continue from `out_dir/checkpoint/` when there is one.
    lr_schedule(step): the learning rate of each step instead of warmup + cosine (`lr_at`); the learning-rate
        range test's (llm/lr_find.py). Such a run is not watched for learning: its rate is not the config's.

    Result: {"stopped", "step", "loss", "tokens_seen", "out_dir"} plus the last evaluation's metrics.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    # Under torchrun: join the other ranks (llm/distributed.py); rank 0 alone writes and talks from here on.
    ranks = distributed.join(device)
    device = ranks.device(device)
    if not ranks.is_main:
        log, on_metrics = (lambda line: None), None
    precision = resolve_dtype(device, config.dtype)
    seed_everything(config.seed)
    model.train()
    params = list(trainable_params) if trainable_params is not None else [
        p for p in model.parameters() if p.requires_grad]
    sharding = None
    if config.parallelism == "fsdp" and ranks.active:
        # Each rank keeps a slice of every weight (llm/sharding.py); the optimizer sees the slices.
        from llm.sharding import FullSharding

        sharding = FullSharding(model, objective, params, ranks, device,
                                compile_blocks=should_compile(config, device))
        params = sharding.params
    else:
        model.to(device)
    optimizer = make_optimizer(params, config, device)
    metrics = MetricsLog(out_dir / METRICS_FILE) if ranks.is_main else NoMetrics()
    evaluate = getattr(objective, "evaluate", None)

    # Pick up where a previous run left off: same weights, moments, RNGs, data position.
    step, tokens_seen = 0, 0
    previous = checkpoint_dir(out_dir) if resume else None
    if previous is not None:
        restored = load_checkpoint(previous, model, params, optimizer, batches)
        step, tokens_seen = restored["step"], restored["tokens_seen"]
        metrics.truncate_after(step)
        log(f"resumed from {previous} at step {step}")
    elif ranks.is_main:  # a fresh start: forget an earlier run's records and checkpoints so nothing stale is resumed
        metrics.clear()
        for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old", CHECKPOINT_DIR + ".tmp"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
    distributed.seed_rank(config.seed, ranks, step)
    # Each rank takes its share of the one stream; the checkpoint's data position is the whole stream's.
    batches = distributed.shard(batches, ranks)
    # Is the run learning? Judged once, a share into the run (llm/learning_watch.py); a resumed run's watch
    # first reads the records it kept, so the verdict does not depend on where the run was interrupted.
    if ranks.is_main:  # rank 0 alone judges and writes the verdict
        clear_verdict(out_dir)
    watched = lr_schedule is None and getattr(objective, "watch_learning", True) and ranks.is_main
    watch = LearningWatch(config.max_steps, config.lr, config.warmup) if watched else None
    for earlier in (metrics.read() if watch is not None and previous is not None else []):
        if watch.observe(earlier):
            save_verdict(out_dir, watch.verdict)

    if sharding is not None:  # its blocks are compiled one by one where compile is on
        loss_of = sharding.loss_function()
        log(f"fully sharded (FSDP): each of {ranks.world_size} ranks keeps 1/{ranks.world_size} of the weights, "
            "gradients and optimizer state")
    else:
        forward_model = torch.compile(model) if should_compile(config, device) else model
        loss_of = distributed.loss_function(forward_model, objective, ranks, device)
    if flops_per_token is None and hasattr(model, "flops_per_token"):
        flops_per_token = model.flops_per_token(config.block_size)
    peak = (config.peak_flops or peak_flops(device)) * ranks.world_size if flops_per_token else None
    n_params = sum(p.numel() for p in params)
    log(f"training {n_params:,} parameters on {device} ({str(precision).removeprefix('torch.')}), "
        f"{config.batch_size * config.grad_accum * config.block_size * ranks.world_size:,} tokens per step, "
        f"steps {step + 1}..{config.max_steps}")
    if ranks.active:
        log(f"data parallel: {ranks.world_size} ranks × batch {config.batch_size} × {config.grad_accum} "
            f"accumulation = {ranks.world_size * config.batch_size * config.grad_accum} rows per step")
    log(thread_note())

    def run_evaluation() -> dict:
        if sharding is not None:  # a sharded model runs on every rank at once; rank 0 keeps the figures
            with sharding.gathered_root():
                results = evaluate_model()
            return results if ranks.is_main else {}
        if not ranks.is_main:  # rank 0 evaluates the raw model alone; the others wait in the next all-reduce
            return {}
        return evaluate_model()

    def evaluate_model() -> dict:
        model.eval()
        with torch.no_grad(), autocast_context(device, precision):
            results = {key: _as_float(value) for key, value in evaluate(model).items()}
        model.train()
        return results

    def save(step_: int) -> None:
        if ranks.is_main or sharding is not None:  # gathering a sharded model takes every rank
            save_checkpoint(out_dir, model, params, optimizer, batches, step_, tokens_seen, config, device,
                            write=ranks.is_main)

    last_loss: torch.Tensor | None = None
    eval_metrics: dict = {}
    interval_start, interval_tokens, interval_overhead = time.perf_counter(), 0, 0.0
    while step < config.max_steps:
        # One optimizer step over grad_accum micro-batches; the lr follows the schedule, not a scheduler.
        lr = lr_at(step + 1, config) if lr_schedule is None else lr_schedule(step + 1)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = torch.zeros((), device=device)
        step_extras: dict[str, Any] = {}
        step_tokens = 0
        for micro_step in range(config.grad_accum):
            batch = move_to(batches.next_batch(), device)
            with autocast_context(device, precision):
                # Under DDP the gradients are averaged across ranks in the last micro-batch's backward only.
                loss, extras = loss_of(batch, micro_step == config.grad_accum - 1)
            # Dividing by grad_accum makes the summed gradients equal those of one big batch.
            (loss / config.grad_accum).backward()
            step_loss += loss.detach().float() / config.grad_accum
            for key, value in extras.items():
                value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
                step_extras[key] = step_extras.get(key, 0.0) + value / config.grad_accum
            step_tokens += objective.tokens_in(batch)
        step_loss, step_tokens = ranks.reduce_step(step_loss, step_tokens)  # every rank's, under DDP
        interval_tokens += step_tokens
        tokens_seen += step_tokens
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip) if config.grad_clip > 0 else None
        grad_norm = as_full(grad_norm)  # FSDP's norm is a sharded tensor: every rank gathers it at once
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        last_loss = step_loss

        # Log (and evaluate) every few steps; reading the loss is what makes a GPU wait, so not every step.
        is_last = step == config.max_steps
        is_eval_step = evaluate is not None and (is_last or (config.eval_every and step % config.eval_every == 0))
        if is_eval_step or is_last or step == 1 or step % config.log_every == 0:
            loss_value = step_loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"the loss became {loss_value} at step {step}; lower the learning "
                                         f"rate or check the data")
            seconds = max(time.perf_counter() - interval_start - interval_overhead, 1e-9)
            tokens_per_s = interval_tokens / seconds
            record = {"step": step, "loss": loss_value, "lr": lr, "tokens_per_s": tokens_per_s,
                      "mfu": mfu(flops_per_token, tokens_per_s, peak) if peak else None,
                      "progress": step / config.max_steps, "tokens": tokens_seen}
            if grad_norm is not None:
                record["grad_norm"] = grad_norm.item()
            record.update({key: _as_float(value) for key, value in ranks.average(step_extras).items()})
            if is_eval_step:
                eval_metrics = run_evaluation()
                record.update(eval_metrics)
            metrics.append(record)
            if on_metrics is not None:
                on_metrics(record)
            log(format_progress(record, config.max_steps))
            if watch is not None and watch.observe(record):
                save_verdict(out_dir, watch.verdict)
                log(f"WARNING: {watch.verdict['warning']}")
            interval_start, interval_tokens, interval_overhead = time.perf_counter(), 0, 0.0

        saved = False
        if is_last or (config.checkpoint_every and step % config.checkpoint_every == 0):
            started = time.perf_counter()
            save(step)
            saved = True
            interval_overhead += time.perf_counter() - started

        # Cooperative cancellation: the job's flag is read between steps, and the run stays resumable.
        # After the last step there is nothing left to cancel: the run finishes normally.
        if not is_last and ranks.agree_to_stop(should_stop):
            if not saved:
                save(step)
            log(f"stopped at step {step}; checkpoint saved in {out_dir / CHECKPOINT_DIR}")
            return {"stopped": True, "step": step, "loss": last_loss.item(), "tokens_seen": tokens_seen,
                    "out_dir": str(out_dir), **eval_metrics}

    if last_loss is None:  # resumed a run that had already finished: report it again, train nothing
        records = metrics.read()
        final_loss = records[-1]["loss"] if records else None
        eval_metrics = run_evaluation() if evaluate is not None else {}
    else:
        final_loss = last_loss.item()
    if save_model_fn is not None and sharding is not None:
        full_model = sharding.full_model()  # every rank gathers; rank 0 gets the plain model
        if ranks.is_main:
            save_model_fn(full_model, out_dir)
    elif save_model_fn is not None and ranks.is_main:
        save_model_fn(model, out_dir)
    ranks.barrier()  # every rank returns once the model is written
    return {"stopped": False, "step": step, "loss": final_loss, "tokens_seen": tokens_seen,
            "out_dir": str(out_dir), **eval_metrics}
