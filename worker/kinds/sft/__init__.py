"""The `sft` kind: supervised fine-tuning of a base (or earlier SFT) model on a chat dataset.

LoRA through peft by default (the output is an adapter directory that loads onto its parent model),
or every weight with `full`. The loss is on the assistant's tokens only (llm/chat.py's mask).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import DatasetKind, JobKind, Model, ModelKind
from db.settings import Settings
from llm.memory import MemoryEstimate, gpt_parameter_count, lora_trainable_params, training_memory
from llm.params import settings_of
from llm.sft_config import SFT_DEFAULTS, SFTConfig
from worker.jobs.context import JobContext, Outcome, dataset_path
from worker.jobs.spec import (DATASET_ID, LOSS_PLOT, MODEL_ID, MODEL_NAME, SPEED_CARDS, TRAINING_CARDS, JobKindSpec,
                               Plot)
from worker.jobs.fit import check_memory, check_schedule, precision
from worker.jobs.params import JobParamsError, fine_tuning_loop_params

PARAMS = {
    "model_id": MODEL_ID,
    "dataset_id": DATASET_ID,
    "name": MODEL_NAME,
    **settings_of(SFTConfig),
    **fine_tuning_loop_params(SFT_DEFAULTS),  # SFT's own defaults for the loop (llm/sft_config.py)
}
SFT_FIELDS = tuple(settings_of(SFTConfig))


def check(session: Session, params: dict[str, Any], settings: Settings) -> None:
    # The learning rate's default depends on `full`: fill it in here, so the stored row says what runs.
    params["lr"] = SFT_DEFAULTS.learning_rate(params["full"], params.get("lr"))
    if params.get("min_lr") is not None and params["min_lr"] > params["lr"]:
        raise JobParamsError("min_lr", "must not be greater than lr")
    check_schedule(params, PARAMS)
    model_config = session.get(Model, params["model_id"]).config or {}
    if not all(isinstance(model_config.get(key), int) for key in ("n_layer", "n_embd", "vocab_size")):
        return  # a row without its shape (made by hand): nothing to estimate from
    estimate = memory_estimate(params, model_config, settings)
    trains_all = params["full"] and estimate.training > estimate.weights
    check_memory(estimate, params, settings, declared=PARAMS, model_field="full" if trains_all else "model_id",
                 model_hint=("train a LoRA adapter instead of all weights, or choose a smaller model" if trains_all
                             else "choose a smaller model"))


def memory_estimate(params: dict[str, Any], model_config: dict[str, Any], settings: Settings) -> MemoryEstimate:
    """Peak memory of the run (llm/memory.py): the whole model is held, the adapter (or every weight with
    `full`) is trained; conversations are cut to the model's context."""
    n_layer, n_embd, vocab = model_config["n_layer"], model_config["n_embd"], model_config["vocab_size"]
    total = gpt_parameter_count(n_layer, n_embd, vocab, model_config.get("block_size", 0))
    trainable = total if params["full"] else lora_trainable_params(model_config, params["lora_r"],
                                                                   params["lora_targets"])
    length = min(params["block_size"], model_config.get("block_size") or params["block_size"])
    return training_memory(total_params=total, trainable_params=trainable, n_layer=n_layer, n_embd=n_embd,
                           vocab_size=vocab, batch_size=params["batch_size"], length=length,
                           **precision(params, settings))


def run(ctx: JobContext) -> Outcome:
    from llm.sft import sft
    from worker.jobs.training import run_training

    params = ctx.params
    sft_config = SFTConfig(**{name: params[name] for name in SFT_FIELDS if name in params})
    base_dir = ctx.input_model_dir()
    ctx.log(f"fine-tuning model {ctx.input_model.id} ({ctx.input_model.name!r}) on dataset {ctx.dataset.id} "
            f"({'all weights' if sft_config.full else f'LoRA r={sft_config.lora_r}'})")
    facts: dict[str, Any] = {}

    def train(train_config):
        result = sft(base_dir, dataset_path(ctx), ctx.run_dir, sft_config=sft_config, train_config=train_config,
                     data_dir=ctx.data_dir, on_metrics=ctx.on_metrics, should_stop=ctx.should_stop, resume=True,
                     log=ctx.log)
        facts.update(result)
        return result

    outcome = run_training(ctx, train, produces=ModelKind.sft, parent_model_id=ctx.input_model.id)
    if not outcome.stopped:
        outcome.summary += (f"; {facts.get('trainable_params', 0):,} trainable parameters, "
                            f"{facts.get('truncated', 0):,} of {facts.get('conversations', 0):,} conversations "
                            f"truncated")
    return outcome


SPEC = JobKindSpec(
    kind=JobKind.sft, title="Fine-tune (SFT)",
    description="Fine-tune a model on conversations (LoRA adapter or all weights); the loss is on the "
                "assistant's answers only, including the end-of-turn token so the model learns to stop.",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.chat,), model_kinds=(ModelKind.base, ModelKind.sft),
    produces=ModelKind.sft, check=check,
    metric_cards=TRAINING_CARDS + (("mean_token_accuracy", "token accuracy"),
                                   ("val_mean_token_accuracy", "val token accuracy")) + SPEED_CARDS,
    plots=(LOSS_PLOT, Plot("Assistant-token accuracy", {"mean_token_accuracy": "train",
                                                        "val_mean_token_accuracy": "val"})),
    form_fields=("model_id", "dataset_id", "full", "lora_r", "lora_alpha", "max_steps", "batch_size", "block_size",
                 "lr", "warmup", "eval_every", "checkpoint_every", "seed", "name"),
)
