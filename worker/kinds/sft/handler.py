"""The `sft` kind's handler: fine-tune the input model on the chat dataset (`llm.sft`), a LoRA adapter or every
weight, and say how many conversations were cut to fit."""

from __future__ import annotations

from typing import Any

from db.models import ModelKind
from llm.sft_config import SFTConfig
from worker.jobs.context import JobContext, Outcome, dataset_path
from worker.jobs.params import fine_tuning_config, method_said
from worker.jobs.training import run_training


def run(ctx: JobContext) -> Outcome:
    from llm.sft import sft

    params = ctx.params
    sft_config = fine_tuning_config(SFTConfig, params)
    base_dir = ctx.input_model_dir()
    ctx.log(f"fine-tuning model {ctx.input_model.id} ({ctx.input_model.name!r}) on dataset {ctx.dataset.id} "
            f"({method_said(params)}; learning rate {params['lr']:g})")
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
