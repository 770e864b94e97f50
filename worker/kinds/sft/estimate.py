"""The `sft` kind's estimate: a run's trainable parameters, FLOPs and peak memory before it is queued.

The one function the Train form's preview and the submit check (spec.py's `check`) both call, so the form
shows the figure the check compares with what the workers have.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import Model
from db.settings import Settings
from llm.memory import gpt_parameter_count, lora_trainable_params, training_memory
from llm.sft_config import SFT_DEFAULTS
from llm.train_config import choose_method
from llm.throughput import ProbeShape
from worker.jobs.fit import RunEstimate, device_type
from worker.jobs.throughput import default_dtype
from worker.jobs.params import required


def estimate(session: Session, params: dict[str, Any], settings: Settings) -> RunEstimate | None:
    """The whole model is held, the adapter (or every weight with the method "full") is trained; conversations are
    cut to the model's context. None for a model row without its shape (made by hand): nothing to estimate from.
    The figures say what the method "auto" stands for on this model and why, and the learning rate the run gets
    (the check stores the same: `worker.jobs.params.resolve_fine_tuning`).

    FLOPs: forward 2N per token and backward 4N (full) or ~2N (LoRA: gradients flow through the frozen weights
    to the adapters, but no weight gradient of the big matrices is computed)."""
    model_config = session.get(Model, required(params, "model_id")).config or {}
    if not all(isinstance(model_config.get(key), int) for key in ("n_layer", "n_embd", "vocab_size")):
        return None
    n_layer, n_embd, vocab = model_config["n_layer"], model_config["n_embd"], model_config["vocab_size"]
    choice = choose_method(params["method"], model_config)
    full = choice.full
    total = gpt_parameter_count(n_layer, n_embd, vocab, model_config.get("block_size", 0))
    trainable = total if full else lora_trainable_params(model_config, params["lora_r"], params["lora_targets"])
    length = min(params["block_size"], model_config.get("block_size") or params["block_size"])
    device = device_type(params, settings)
    memory = training_memory(total_params=total, trainable_params=trainable, n_layer=n_layer, n_embd=n_embd,
                             vocab_size=vocab, batch_size=params["batch_size"], length=length,
                             device_type=device, dtype=params.get("dtype"))
    tokens_per_step = params["batch_size"] * length * params["grad_accum"]
    trains_all = full and memory.training > memory.weights
    # What its time is read for (worker.jobs.throughput); the probe runs the head at every position, where SFT
    # runs it at the answers only: the time errs long by up to the head's share of the step.
    step_shape = ProbeShape(n_layer, model_config.get("n_head") or 1, n_embd, vocab, params["batch_size"], length,
                            default_dtype(device, params.get("dtype")), lora_rank=0 if full else params["lora_r"])
    return RunEstimate(
        memory=memory, device_type=device, flops=(6 if full else 4) * total * tokens_per_step * params["max_steps"],
        model_field="method" if trains_all else "model_id",
        model_hint=("choose the method lora (a LoRA adapter instead of all weights), or a smaller model" if trains_all
                    else "choose a smaller model"),
        figures={"params_total": total, "trainable_params": trainable, "tokens_per_step": tokens_per_step,
                 "total_tokens": tokens_per_step * params["max_steps"], "method": choice.method,
                 "method_reason": params.get("method_reason") or choice.reason,
                 "lr": SFT_DEFAULTS.learning_rate(choice.method, params.get("lr"), n_embd),
                 "lr_given": params.get("lr") is not None},
        shape=step_shape)
