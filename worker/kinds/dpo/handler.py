"""The `dpo` kind's handler: the pairs snapshotted as the reward kind's, then DPO of the input policy (`llm.dpo`),
reporting its held-out preference accuracy and how far it moved (KL)."""

from __future__ import annotations

from typing import Any

from db.models import ModelKind
from llm.dpo_config import DPOConfig
from llm.params import settings_of
from worker.jobs.context import JobContext, Outcome
from worker.jobs.training import run_training
from worker.kinds.reward.handler import snapshot

DPO_FIELDS = tuple(settings_of(DPOConfig))


def run(ctx: JobContext) -> Outcome:
    from llm.dpo import dpo

    dpo_config = DPOConfig(**{name: ctx.params[name] for name in DPO_FIELDS if name in ctx.params})
    pairs = snapshot(ctx)
    policy_dir = ctx.input_model_dir()
    ctx.log(f"DPO of model {ctx.input_model.id} ({ctx.input_model.name!r}) on {len(pairs):,} pairs "
            f"({dpo_config.loss_type}, beta {dpo_config.beta}, "
            f"{'all weights' if dpo_config.full else f'LoRA r={dpo_config.lora_r}'})")
    facts: dict[str, Any] = {}

    def train(train_config):
        result = dpo(policy_dir, pairs, ctx.run_dir, dpo_config=dpo_config, train_config=train_config,
                     data_dir=ctx.data_dir, on_metrics=ctx.on_metrics, should_stop=ctx.should_stop, log=ctx.log)
        facts.update(result)
        return result

    outcome = run_training(ctx, train, produces=ModelKind.dpo, parent_model_id=ctx.input_model.id)
    if not outcome.stopped and facts.get("val_rewards/accuracies") is not None:
        outcome.summary += f"; held-out preference accuracy {facts['val_rewards/accuracies']:.1%}"
        if facts.get("kl") is not None:
            outcome.summary += f", KL from the start {facts['kl']:.3f} nats"
    return outcome
