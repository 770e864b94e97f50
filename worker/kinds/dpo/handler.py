"""The `dpo` kind's handler: the pairs snapshotted as the reward kind's, then DPO of the input policy (`llm.dpo`),
reporting its held-out preference accuracy, how far it moved (KL) and, when the degeneration watch flagged the
run, what it found and what to change: in the log, the summary line and the job's notice in the Jobs tab."""

from __future__ import annotations

from typing import Any

from db.models import ModelKind
from llm.dpo_config import DPOConfig
from worker.jobs.context import JobContext, Outcome
from worker.jobs.params import fine_tuning_config, method_said
from worker.jobs.training import add_warning, run_training
from worker.kinds.reward.handler import snapshot


def run(ctx: JobContext) -> Outcome:
    from llm.dpo import dpo

    dpo_config = fine_tuning_config(DPOConfig, ctx.params)
    pairs = snapshot(ctx)
    policy_dir = ctx.input_model_dir()
    ctx.log(f"DPO of model {ctx.input_model.id} ({ctx.input_model.name!r}) on {len(pairs):,} pairs "
            f"({dpo_config.loss_type}, beta {dpo_config.beta}, "
            f"{method_said(ctx.params)}; learning rate {ctx.params['lr']:g})")
    facts: dict[str, Any] = {}

    def train(train_config):
        result = dpo(policy_dir, pairs, ctx.run_dir, dpo_config=dpo_config, train_config=train_config,
                     data_dir=ctx.data_dir, on_metrics=ctx.on_metrics, should_stop=ctx.should_stop, log=ctx.log)
        facts.update(result)
        return result

    outcome = run_training(ctx, train, produces=ModelKind.dpo, parent_model_id=ctx.input_model.id)
    if outcome.stopped:
        return outcome
    if facts.get("val_rewards/accuracies") is not None:
        pairs_kind = "held-out" if facts.get("held_out") else "training-pair"
        outcome.summary += f"; {pairs_kind} preference accuracy {facts['val_rewards/accuracies']:.1%}"
        if facts.get("kl") is not None:
            outcome.summary += f", KL from the start {facts['kl']:.3f} nats per token"
    # The run is kept, but not as it ran: said in the log, the summary and the job's notice.
    add_warning(ctx, outcome, facts.get("degeneration"))
    return outcome
