"""The estimate every fine-tuning kind shares (SFT, reward, DPO): trainable parameters, FLOPs, peak memory and the
step's shape, read off the model row and the params before a run is queued.

What differs between the kinds is what one example is and what its step computes, said by a `StepWork`:

    kind     sequences per example   vocabulary head        extra forward passes
    sft      1 (the conversation)    at every position*     none
    reward   2 (chosen, rejected)    none: a scalar head    none
    dpo      2 (chosen, rejected)    at every position      LoRA: the reference, the same network with its
                                                            adapter off, one forward per step

(*) SFT's loss reads the answers' positions only, but the probes (llm/throughput.py) time the head at every
position, so its time errs long by up to the head's share of the step (`head_share` in the figures). A DPO run
with all weights computes its reference log-probs once before training (one forward over the pairs): the step's
estimate leaves that out, as it leaves out data loading.

The kind's `estimate.py` calls `fine_tuning_estimate` with its work and defaults; the Train form's preview and the
submit check (`worker.jobs.fit.check_memory`) both read what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.models import Model
from db.settings import Settings
from llm.memory import (fsdp_gathered_params, fsdp_shards, gpt_parameter_count, lora_trainable_params,
                        training_memory)
from llm.throughput import ProbeShape
from llm.train_config import FineTuningDefaults, choose_method
from worker.jobs.fit import RunEstimate, device_type
from worker.jobs.params import required
from worker.jobs.throughput import default_dtype

# A reward model's head gives one number per position, not a vocabulary's worth: its step is a GPT whose head
# has one output, which is what its probe shape and its logits' memory say.
SCALAR_HEAD = 1


@dataclass(frozen=True)
class StepWork:
    """What one optimizer micro-step of a fine-tuning kind computes, per example in its batch."""

    sequences_per_example: int = 1     # a preference pair is two sequences in one forward
    vocabulary_head: bool = True       # False: a scalar head (reward models)
    reference_forward: bool = False    # True: a LoRA run also runs the network without its adapter (DPO)


SFT_WORK = StepWork()
REWARD_WORK = StepWork(sequences_per_example=2, vocabulary_head=False)
DPO_WORK = StepWork(sequences_per_example=2, reference_forward=True)


def fine_tuning_estimate(session: Session, params: dict[str, Any], settings: Settings, defaults: FineTuningDefaults,
                         work: StepWork) -> RunEstimate | None:
    """The whole model is held, the adapter (or every weight with the method "full") is trained; sequences are cut
    to the model's context. None for a model row without its shape (made by hand): nothing to estimate from. The
    figures say what the method "auto" stands for on this model and why, and the learning rate the run gets (the
    check stores the same: `worker.jobs.params.resolve_fine_tuning`).

    FLOPs per token: forward 2N and backward 4N (full) or ~2N (LoRA: gradients flow through the frozen weights to
    the adapters, but no weight gradient of the big matrices is computed), plus 2N for a reference forward."""
    model_config = session.get(Model, required(params, "model_id")).config or {}
    if not all(isinstance(model_config.get(key), int) for key in ("n_layer", "n_embd", "vocab_size")):
        return None
    n_layer, n_embd, vocab = model_config["n_layer"], model_config["n_embd"], model_config["vocab_size"]
    choice = choose_method(params["method"], model_config)
    full = choice.full
    total = gpt_parameter_count(n_layer, n_embd, vocab, model_config.get("block_size", 0))
    trainable = total if full else lora_trainable_params(model_config, params["lora_r"], params["lora_targets"])
    length = min(params["block_size"], model_config.get("block_size") or params["block_size"])
    sequences = params["batch_size"] * work.sequences_per_example
    head = vocab if work.vocabulary_head else SCALAR_HEAD
    device = device_type(params, settings)
    memory = training_memory(total_params=total, trainable_params=trainable, n_layer=n_layer, n_embd=n_embd,
                             vocab_size=head, batch_size=sequences, length=length,
                             device_type=device, dtype=params.get("dtype"), shards=fsdp_shards(params),
                             gathered_params=fsdp_gathered_params(n_embd, vocab, model_config.get("block_size", 0)))
    tokens_per_step = sequences * length * params["grad_accum"]
    flops_per_token = (6 if full else 4) + (2 if work.reference_forward and not full else 0)
    trains_all = full and memory.training > memory.weights
    step_shape = ProbeShape(n_layer, model_config.get("n_head") or 1, n_embd, head, sequences, length,
                            default_dtype(device, params.get("dtype")), lora_rank=0 if full else params["lora_r"])
    return RunEstimate(
        memory=memory, device_type=device, flops=flops_per_token * total * tokens_per_step * params["max_steps"],
        model_field="method" if trains_all else "model_id",
        model_hint=("choose the method lora (a LoRA adapter instead of all weights), or a smaller model" if trains_all
                    else "choose a smaller model"),
        figures={"params_total": total, "trainable_params": trainable, "tokens_per_step": tokens_per_step,
                 "total_tokens": tokens_per_step * params["max_steps"], "method": choice.method,
                 "method_reason": params.get("method_reason") or choice.reason,
                 "lr": defaults.learning_rate(choice.method, params.get("lr"), n_embd),
                 "lr_given": params.get("lr") is not None},
        shape=step_shape)
