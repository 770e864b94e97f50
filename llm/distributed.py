"""Data parallelism for the one training loop (llm/train.py): ranks started by `torchrun`, DDP, a sharded stream.

    torchrun --nproc_per_node=2 -m llm pretrain --data prepared/ --out runs/a ...

torchrun starts one process per rank and tells each who it is through the environment (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). `join` reads it and initialises torch.distributed:
gloo on the CPU, NCCL on CUDA (rank r on GPU LOCAL_RANK). Without WORLD_SIZE nothing is initialised and the
loop is the single-process loop it always was. With WORLD_SIZE=1 (one rank under torchrun) the DDP path runs
on one rank, which is how a GPU box checks NCCL alone.

What each rank does:
  - builds the same model from the same seed; DDP also broadcasts rank 0's weights when it wraps them;
  - takes every W-th micro-batch of the one stream (`RankShard`): rank r of W gets micro-batches r, r+W,
    r+2W, ... The source skips the others without building them. After each round every rank's source
    stands at the same place, so rank 0's data position *is* the run's position, and a checkpoint taken
    on W ranks resumes on any other number of ranks where the stream left off;
  - runs forward and backward on its micro-batches; DDP averages the gradients across ranks in the last
    micro-batch's backward only (`no_sync` before it), so one all-reduce per optimizer step;
  - steps the optimizer on identical gradients, so every rank holds identical weights after every step.

The global batch is batch_size × ranks × grad_accum micro-batch rows. W ranks with grad_accum A train
exactly as one process with grad_accum W×A on the same stream (tests/llm/test_ddp.py checks the losses).

Rank 0 alone writes: checkpoints, metrics.jsonl, the log, the learning verdict and the final model; it also
alone evaluates (on the raw model, so evaluation needs no other rank). Every step the ranks agree on the
loss, the tokens trained on and whether to stop (one small all-reduce each), so every rank logs, stops and
finishes on the same step.

The objective runs inside DDP's forward (`ObjectiveStep`): DDP only syncs gradients of a forward it ran,
and objectives call more than `model(...)` (DPO: `hidden_states`, `lm_head`, peft's `disable_adapter`).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _environment_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        if default is None:
            raise ValueError(f"WORLD_SIZE is set, so this is a distributed run, but {name} is not: start the "
                             f"ranks with torchrun (which sets {', '.join(ENVIRONMENT)})")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


@dataclass(frozen=True)
class Ranks:
    """Who this process is among the ranks of one run; `Ranks()` is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    active: bool = False  # torch.distributed is initialised and the loop takes the DDP path

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and talks to people."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """Rank r of a CUDA run uses GPU LOCAL_RANK (torchrun's convention); a CPU run stays on the CPU."""
        if not self.active or device.type != "cuda":
            return device
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device

    # ------------------------------------------------------------------ agreeing across ranks

    def reduce_step(self, loss: torch.Tensor, tokens: int) -> tuple[torch.Tensor, int]:
        """The step's loss averaged over ranks and its tokens summed (one all-reduce)."""
        if not self.active:
            return loss, tokens
        import torch.distributed as dist

        # float64 holds a token count exactly; the loss goes back to its own dtype afterwards.
        packed = torch.stack([loss.detach().double(), torch.tensor(float(tokens), dtype=torch.float64,
                                                                    device=loss.device)])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        return (packed[0] / self.world_size).to(loss.dtype), int(packed[1].item())

    def average(self, values: dict[str, Any]) -> dict[str, Any]:
        """Per-step extras (accuracy, margins, ...) averaged over ranks; every rank must call it at once."""
        if not self.active or not values:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        packed = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64, device=_any_device())
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        return {key: value / self.world_size for key, value in zip(keys, packed.tolist())}

    def agree_to_stop(self, should_stop: Callable[[], bool] | None) -> bool:
        """Stop when any rank's `should_stop` says so (a rank without one says no), on every rank together."""
        if not self.active:
            return should_stop is not None and should_stop()
        import torch.distributed as dist

        flag = torch.tensor([1.0 if should_stop is not None and should_stop() else 0.0], device=_any_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


_device_of_group: torch.device | None = None


def _any_device() -> torch.device:
    """Where small agreement tensors live: the CPU for gloo, this rank's GPU for NCCL."""
    return _device_of_group or torch.device("cpu")


def ranks_from_environment() -> Ranks:
    """The ranks torchrun described, without initialising anything; `Ranks()` when WORLD_SIZE is unset."""
    if "WORLD_SIZE" not in os.environ:
        return Ranks()
    world_size = _environment_int("WORLD_SIZE")
    rank = _environment_int("RANK")
    local_rank = _environment_int("LOCAL_RANK", default=rank)
    local_world_size = _environment_int("LOCAL_WORLD_SIZE", default=world_size)
    if world_size < 1 or not 0 <= rank < world_size or not 0 <= local_rank < local_world_size:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world_size}, "
                         f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world_size}")
    return Ranks(rank, world_size, local_rank, local_world_size)


def join(device: torch.device) -> Ranks:
    """Initialise torch.distributed from torchrun's environment (once per process) and say who we are.

    Nothing happens without WORLD_SIZE: the single-process run initialises nothing.
    """
    global _device_of_group
    ranks = ranks_from_environment()
    if "WORLD_SIZE" not in os.environ:
        return ranks
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed: install a build that has it")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group(backend=backend, init_method="env://", rank=ranks.rank,
                                world_size=ranks.world_size)
    if dist.get_world_size() != ranks.world_size or dist.get_rank() != ranks.rank:
        raise RuntimeError(f"torch.distributed was initialised as rank {dist.get_rank()} of {dist.get_world_size()}, "
                           f"the environment says {ranks.rank} of {ranks.world_size}")
    ranks = Ranks(ranks.rank, ranks.world_size, ranks.local_rank, ranks.local_world_size, active=True)
    _device_of_group = ranks.device(device) if dist.get_backend() == "nccl" else torch.device("cpu")
    return ranks


def leave() -> None:
    """Tear the process group down (the end of a torchrun process); nothing when none was set up."""
    global _device_of_group
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _device_of_group = None


def seed_rank(seed: int, ranks: Ranks, step: int) -> None:
    """Ranks other than 0 draw their own dropout masks: a seed of their own, moved on by the step a resumed
    run starts at (a checkpoint holds rank 0's generators only). Rank 0 keeps the single-process seeding."""
    if ranks.active and ranks.rank:
        torch.manual_seed(seed + 1_000_003 * ranks.rank + step)


# ----------------------------------------------------------------------------- the sharded stream

def skip_batch(source) -> None:
    """Move a batch source past one batch without building it when the source can (`skip_batch`)."""
    skip = getattr(source, "skip_batch", None)
    if skip is not None:
        skip()
    else:
        source.next_batch()


class RankShard:
    """Rank r of W takes micro-batches r, r+W, r+2W, ... of `source`; its state is the source's (see above)."""

    def __init__(self, source, rank: int, world_size: int):
        self.source, self.rank, self.world_size = source, rank, world_size

    def next_batch(self) -> Any:
        for _ in range(self.rank):
            skip_batch(self.source)
        batch = self.source.next_batch()
        for _ in range(self.world_size - self.rank - 1):
            skip_batch(self.source)
        return batch

    def state_dict(self) -> dict:
        return self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state)


def shard(source, ranks: Ranks):
    """The batch source this rank draws from: the source itself in a single process."""
    return RankShard(source, ranks.rank, ranks.world_size) if ranks.active else source


# ----------------------------------------------------------------------------- the loss under DDP

class ObjectiveStep(nn.Module):
    """`objective.loss(model, batch)` as a module's forward, so DDP can wrap whatever the objective calls."""

    def __init__(self, model: nn.Module, objective):
        super().__init__()
        self.model = model
        self.__dict__["objective"] = objective  # not a submodule: only the model's parameters are DDP's

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict]:
        return self.objective.loss(self.model, batch)


def loss_function(model: nn.Module, objective, ranks: Ranks, device: torch.device
                  ) -> Callable[[Any, bool], tuple[torch.Tensor, dict]]:
    """`loss_of(batch, sync)`: the objective's loss; under DDP, gradients are averaged across ranks in the
    backward of a forward with sync=True (the last micro-batch of a step) and of no other."""
    if not ranks.active:
        return lambda batch, sync: objective.loss(model, batch)
    from torch.nn.parallel import DistributedDataParallel

    wrapped = DistributedDataParallel(
        ObjectiveStep(model, objective), device_ids=[device.index] if device.type == "cuda" else None,
        # The buffers (rotary tables, masks) are the same on every rank and never change: no broadcast
        # before every forward.
        broadcast_buffers=False,
        # A reward model never uses the LM head, DPO's reference pass uses no adapter: DDP must not wait
        # for gradients that never come. Costs one walk of the autograd graph per forward.
        find_unused_parameters=True)

    def loss_of(batch: Any, sync: bool) -> tuple[torch.Tensor, dict]:
        # DDP decides in forward whether the coming backward all-reduces, so no_sync around forward suffices.
        with nullcontext() if sync else wrapped.no_sync():
            return wrapped(batch)

    return loss_of
