"""The `pretrain` kind's handler: tokenize the dataset on first use, then train a base model (`llm.pretrain`)."""

from __future__ import annotations

from db.models import ModelKind
from llm.pretrain_config import SHAPE_FIELDS
from worker.jobs.context import JobContext, Outcome, ensure_prepared
from worker.jobs.training import run_training


def run(ctx: JobContext) -> Outcome:
    from llm.pretrain import pretrain

    params = ctx.params
    prepared = ensure_prepared(ctx, params["tokenizer"])
    if prepared is None:
        return Outcome(stopped=True, summary="stopped while preparing the data")
    overrides = {name: params[name] for name in SHAPE_FIELDS if name in params}

    def train(train_config):
        return pretrain(prepared, ctx.run_dir, preset=params["preset"], train_config=train_config,
                        model_overrides=overrides or None, data_dir=ctx.data_dir, on_metrics=ctx.on_metrics,
                        should_stop=ctx.should_stop, resume=True, log=ctx.log)

    return run_training(ctx, train, produces=ModelKind.base)
