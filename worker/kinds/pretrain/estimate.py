"""The `pretrain` kind's estimate: a run's model size, FLOPs and peak memory before it is queued.

The one function the Train form's preview and the submit check (spec.py's `check`) both call, so the form
shows the figure the check compares with what the workers have. Its `shape` is what the run's time is read for
(`worker.jobs.throughput`); its figures say how much of the work the vocabulary head is and, when that is most of
it, which vocabulary would fit the model (`llm.throughput.fitting_vocab_size`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.settings import Settings
from llm.memory import (fsdp_gathered_params, fsdp_shards, gpt_parameter_count, training_flops_per_token,
                        training_memory)
from llm.pretrain_config import SHAPE_FIELDS
from llm.throughput import ProbeShape, fitting_vocab_size
from worker.jobs.fit import RunEstimate, device_type
from worker.jobs.params import JobParamsError
from worker.jobs.throughput import default_dtype

# Above this share of a step's FLOPs in the vocabulary head, the form proposes a tokenizer that fits the model.
LARGEST_HEAD_SHARE = 0.5


def model_shape(params: dict[str, Any]) -> dict[str, Any]:
    """The preset's shape with the run's overrides; JobParamsError for an unknown preset or heads that do not
    divide the width."""
    from llm.model import PRESETS  # imports torch; only when a pretrain job is sized

    if params["preset"] not in PRESETS:
        raise JobParamsError("preset", f"unknown preset {params['preset']!r}; choose one of {', '.join(PRESETS)}")
    shape = {**PRESETS[params["preset"]], **{name: params[name] for name in SHAPE_FIELDS if name in params}}
    if shape["n_embd"] % shape["n_head"]:
        field = "n_head" if "n_head" in params else "n_embd"
        raise JobParamsError(field, f"n_embd ({shape['n_embd']}) must be divisible by n_head ({shape['n_head']})")
    return shape


def estimate(session: Session, params: dict[str, Any], settings: Settings) -> RunEstimate:
    """Every parameter is trained; the context is the run's block_size (llm/memory.py's formulas)."""
    from llm.model import padded_vocab_size
    from llm.tokenizer import get_tokenizer

    shape = model_shape(params)
    n_layer, n_embd, block_size = shape["n_layer"], shape["n_embd"], params["block_size"]
    if params.get("new_tokenizer_vocab"):  # trained on the dataset as the job's first stage, with 3 chat specials
        vocab = padded_vocab_size(params["new_tokenizer_vocab"] + 3)
    else:
        vocab = padded_vocab_size(get_tokenizer(params["tokenizer"], settings.data_dir).vocab_size)
    total = gpt_parameter_count(n_layer, n_embd, vocab, block_size)
    device = device_type(params, settings)
    memory = training_memory(total_params=total, trainable_params=total, n_layer=n_layer, n_embd=n_embd,
                             vocab_size=vocab, batch_size=params["batch_size"], length=block_size,
                             device_type=device, dtype=params.get("dtype"), shards=fsdp_shards(params),
                             gathered_params=fsdp_gathered_params(n_embd, vocab, block_size))
    matmul_params = total - block_size * n_embd  # the position embedding costs no matmul
    flops_per_token = training_flops_per_token(matmul_params, n_layer, n_embd, block_size)
    tokens_per_step = params["batch_size"] * block_size * params["grad_accum"]
    step_shape = ProbeShape(n_layer, shape["n_head"], n_embd, vocab, params["batch_size"], block_size,
                            default_dtype(device, params.get("dtype")))
    return RunEstimate(
        memory=memory, device_type=device, flops=flops_per_token * tokens_per_step * params["max_steps"],
        model_field=next((name for name in ("n_embd", "n_layer") if name in params), "preset"),
        model_hint="choose a smaller preset or lower n_layer / n_embd",
        figures={"params_count": matmul_params, "params_total": total, "tokens_per_step": tokens_per_step,
                 "total_tokens": tokens_per_step * params["max_steps"], "flops_per_token": flops_per_token,
                 "config": {**shape, "vocab_size": vocab, "block_size": block_size},
                 "head_share": step_shape.head_share, **tokenizer_advice(step_shape)},
        shape=step_shape)


def tokenizer_advice(shape: ProbeShape) -> dict[str, Any]:
    """{"fitting_vocab": N, "tokenizer_advice": why} when the vocabulary head is most of the run's work and a
    vocabulary of less than half would fit; else {}.

    A model of this width can only use so many tokens: the head's cost grows with the vocabulary while the
    blocks' does not, so past about half the step the run mostly learns to choose among tokens it has too
    little capacity to tell apart (tiny with GPT-2's 50,257 tokens: 96 % of the FLOPs in the head)."""
    vocab = fitting_vocab_size(shape.n_layer, shape.n_embd, shape.block_size)
    if shape.head_share <= LARGEST_HEAD_SHARE or shape.vocab_size < 2 * vocab:  # near the fit already: keep it
        return {}
    return {"fitting_vocab": vocab, "tokenizer_advice": (
        f"The vocabulary head is {shape.head_share:.0%} of this run's work: {shape.vocab_size:,} tokens are more "
        f"than a {shape.n_layer}-layer, {shape.n_embd}-wide model can use. A trained tokenizer of {vocab:,} tokens "
        f"keeps the head near half of the work (about {1 / (1 - shape.head_share) / 2:.1f}x less work per token "
        f"at equal width): set \"train a tokenizer first\" to {vocab} (trained on this dataset as the job's first "
        f"stage), or train one in Train ▸ Tokenizer and choose it here.")}
