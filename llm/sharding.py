"""Full sharding (FSDP) for the one training loop (llm/train.py): `parallelism: fsdp` in the train config.

DDP (llm/distributed.py) keeps a whole copy of the weights, their gradients and AdamW's two moments on every
rank: 16 bytes a parameter in float32. A model for which that does not fit one device can be trained with its
state split over the ranks instead: torch's FSDP2 (`torch.distributed.fsdp.fully_shard`) keeps 1/W of every
parameter, gradient and moment on each of W ranks, gathers a block's full weights just before the block runs
(forward and backward) and frees them after, and reduce-scatters the gradients so each rank receives the
average of its own slice. Each transformer block is one unit of sharding; the root unit is the objective's step
(`ObjectiveStep`, as for DDP), which holds the rest (embeddings, final norm, head): whatever the objective calls
(`model(...)`, `hidden_states`, `lm_head`) runs with those weights gathered.

Everything else is the data-parallel loop's: the same sharded stream, the same agreement on loss, tokens and
stopping. Unlike DDP, every micro-batch's gradients are reduce-scattered (DDP all-reduces once a step): FSDP's
`no_sync` would hold whole unsharded gradients between micro-batches, the memory sharding exists to save; the
price is one reduce-scatter per micro-batch. The sum is the same, so W ranks with grad_accum A still train as one
process with grad_accum W×A (tests/llm/test_fsdp.py).

Memory per rank (llm/memory.py `training_memory(shards=W, gathered_params=...)`, which the jobs' fit check uses):
1/W of the weights and of the gradients and AdamW moments, plus the units gathered in full while they run: the
root (embeddings and head, for the whole forward and backward) and a block.

What is written stays the format every other run writes: rank 0 writes the checkpoint's weights and the
optimizer's state *gathered in full* (`full_tensors`, `full_optimizer_state`: a collective, every rank takes
part, tensor by tensor; only rank 0 keeps the results, the others drop each as it arrives), keyed as a single process keys them. So a sharded run resumes on any number of
ranks, with or without sharding, and the final model file is the same safetensors file; it is written from a
plain copy of the model (`full_model`) that rank 0 fills with the gathered weights.

Not supported: LoRA with FSDP (an adapter is small: DDP already fits it; refused when the run is configured,
`llm.train_config.check_parallelism`). Without torchrun (one process), `fsdp` changes nothing.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from llm.distributed import ObjectiveStep, Ranks, _any_device


def _is_sharded(value: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(value, DTensor)


def as_full(value: Any) -> Any:
    """A sharded tensor gathered in full (a collective: every rank calls it, in the same order); anything else
    as it is."""
    return value.full_tensor() if _is_sharded(value) else value


def full_tensors(tensors: dict[str, torch.Tensor], keep: bool = True) -> dict[str, torch.Tensor]:
    """`{name: tensor}` on the CPU, sharded ones gathered in full (collective when any is sharded). A rank that
    does not write them passes `keep=False`: it takes part in each gather and drops the result at once, so it
    holds one gathered tensor at a time instead of a second copy of the whole model ({} is returned)."""
    full = {}
    for name, tensor in tensors.items():
        gathered = as_full(tensor)
        if keep:
            full[name] = gathered.detach().cpu().contiguous()
    return full


def full_optimizer_state(optimizer: torch.optim.Optimizer, keep: bool = True) -> dict:
    """`optimizer.state_dict()` with every sharded moment gathered in full: the state a single process keeps,
    keyed by parameter index, so it loads into any run of the same model (collective under FSDP). With
    `keep=False` (a rank that does not write it) each gathered moment is dropped as soon as it is gathered."""

    def gathered(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: gathered(item) for key, item in value.items()}
        if isinstance(value, list):
            return [gathered(item) for item in value]
        if isinstance(value, torch.Tensor):
            full = as_full(value)
            return full.detach().cpu() if keep else None
        return value

    return gathered(optimizer.state_dict())


def _shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` split as the sharded `like` is split; this rank's slice is cut from its own copy (no communication)."""
    from torch.distributed.tensor import distribute_tensor

    if not _is_sharded(like) or _is_sharded(full) or tuple(full.shape) != tuple(like.shape):
        return full
    return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements, src_data_rank=None)


def shard_weights_like(tensors: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Full weights by name (a checkpoint's) split as `model`'s sharded parameters are: what its
    `load_state_dict` takes. A model that is not sharded takes them as they are."""
    parameters = dict(model.named_parameters())
    return {name: _shard_like(tensor, parameters[name]) if name in parameters else tensor
            for name, tensor in tensors.items()}


def shard_optimizer_state_like(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A full optimizer state (`full_optimizer_state`, or a single process's) split as `optimizer`'s parameters
    are, for `optimizer.load_state_dict`. Indices follow the parameter groups' order, as in `state_dict()`."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not any(_is_sharded(p) for p in params):
        return state
    per_parameter = {}
    for index, values in state["state"].items():
        like = params[int(index)]
        per_parameter[index] = {key: _shard_like(value, like) if isinstance(value, torch.Tensor) else value
                                for key, value in values.items()}
    return {**state, "state": per_parameter}


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks: the units of sharding below the root."""
    from llm.model import Block

    return [module for module in model.modules() if isinstance(module, Block)]


def _meta_copy(model: nn.Module) -> nn.Module:
    """The model's structure with its parameters on the meta device (no memory): filled in by `full_model`."""
    memo: dict[int, Any] = {}
    for parameter in model.parameters():
        memo[id(parameter)] = nn.Parameter(torch.empty_like(parameter, device="meta"),
                                           requires_grad=parameter.requires_grad)
    return copy.deepcopy(model, memo)  # tied weights stay tied: one id, one copy


class FullSharding:
    """One run's FSDP state: the sharded model, its parameters as the optimizer must see them, the loss."""

    def __init__(self, model: nn.Module, objective, params: list[nn.Parameter], ranks: Ranks,
                 device: torch.device, compile_blocks: bool = False):
        from torch.distributed.fsdp import fully_shard

        if not ranks.active:
            raise ValueError("FSDP needs torch.distributed: start the run with torchrun")
        if any(not p.requires_grad for p in model.parameters()):
            raise ValueError("parallelism fsdp trains every weight of the model; this model has frozen weights "
                             "(a LoRA adapter?): use parallelism ddp")
        import torch.distributed as dist

        self.model, self.ranks = model, ranks
        # Every rank built the same model from the same seed; rank 0's weights are the run's all the same (as
        # DDP does when it wraps them), before anything is split.
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                on_group = tensor.to(_any_device())  # NCCL sends CUDA tensors: one at a time, then back
                dist.broadcast(on_group, src=0)
                tensor.copy_(on_group)
        names = {id(p): name for name, p in model.named_parameters()}
        wanted = [names[id(p)] for p in params]
        self.skeleton = _meta_copy(model) if ranks.is_main else None
        mesh = None
        if device.type == "cuda":
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh("cuda", (ranks.world_size,))
        # Block by block, then the root: fully_shard moves each rank's slices to the mesh's device, so the full
        # model never has to fit one GPU.
        for block in _blocks(model):
            if compile_blocks:
                # The block's computation compiled, FSDP's gather and free around it left eager (torchtitan's
                # pattern), and the parameters' names unchanged (no `_orig_mod.`): checkpoints stay the same.
                block.forward = torch.compile(block.forward)
            fully_shard(block, mesh=mesh)
        self.step = fully_shard(ObjectiveStep(model, objective), mesh=mesh)
        by_name = dict(model.named_parameters())
        self.params = [by_name[name] for name in wanted]

    def loss_function(self) -> Callable[[Any, bool], tuple[torch.Tensor, dict]]:
        """`loss_of(batch, sync)` as `distributed.loss_function` gives it; each micro-batch's gradients are
        reduce-scattered (averaged over ranks) and summed into this rank's slices."""

        def loss_of(batch: Any, sync: bool) -> tuple[torch.Tensor, dict]:
            # Every micro-batch's gradients are reduce-scattered, `sync` or not: skipping it (FSDP's no_sync)
            # would keep whole unsharded gradients between micro-batches, the memory sharding is there to save.
            return self.step(batch)

        return loss_of

    @contextmanager
    def gathered_root(self) -> Iterator[None]:
        """The root's weights (embeddings, head) gathered, so `model(...)` can run outside the objective's step:
        evaluation, on every rank at once (the blocks gather their own)."""
        self.step.unshard()
        try:
            yield
        finally:
            self.step.reshard()

    def full_model(self) -> nn.Module | None:
        """On rank 0, a plain CPU copy of the model holding the trained weights in full (what `save_model_fn`
        writes); None on the other ranks. A collective: every rank calls it."""
        weights = full_tensors(dict(self.model.named_parameters()), keep=self.skeleton is not None)
        if self.skeleton is None:
            return None
        buffers = {name: buffer.detach().cpu() for name, buffer in self.model.named_buffers()}
        skeleton = self.skeleton
        canonical = {id(p): name for name, p in skeleton.named_parameters()}
        filled: dict[int, nn.Parameter] = {}
        for module in skeleton.modules():
            for name, parameter in list(module._parameters.items()):
                if parameter is None:
                    continue
                if id(parameter) not in filled:
                    filled[id(parameter)] = nn.Parameter(weights[canonical[id(parameter)]],
                                                         requires_grad=parameter.requires_grad)
                module._parameters[name] = filled[id(parameter)]
        for name, buffer in skeleton.named_buffers():
            if name in buffers:
                buffer.data = buffers[name]
        return skeleton.cpu()
