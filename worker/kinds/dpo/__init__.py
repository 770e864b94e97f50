"""The `dpo` kind: Direct Preference Optimization of an SFT (or base) model on preference pairs.

The pairs come from the same sources as the reward kind's (worker/kinds/reward.py: PAIR_SOURCES). The
output is a chat model of kind dpo whose parent is the policy it started from (an adapter of it with LoRA).
"""

from __future__ import annotations

from typing import Any

from db.models import DatasetKind, JobKind, ModelKind
from llm.dpo_config import DPO_DEFAULTS, DPOConfig
from llm.params import settings_of
from worker.jobs.context import JobContext, Outcome
from worker.jobs.spec import SPEED_CARDS, JobKindSpec, Plot
from worker.kinds.reward import preference_check, preference_params, snapshot

PARAMS = preference_params(DPOConfig, DPO_DEFAULTS)
DPO_FIELDS = tuple(settings_of(DPOConfig))
check = preference_check(PARAMS, DPO_DEFAULTS)


def run(ctx: JobContext) -> Outcome:
    from llm.dpo import dpo
    from worker.jobs.training import run_training

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


SPEC = JobKindSpec(
    kind=JobKind.dpo, title="DPO",
    description="Direct Preference Optimization: make the chosen answers more likely than the rejected ones, "
                "relative to where the model started. Both rewards often fall; what matters is their margin.",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.preference,),
    model_kinds=(ModelKind.sft, ModelKind.base, ModelKind.dpo), produces=ModelKind.dpo, check=check,
    metric_cards=(("step", "step"), ("loss", "loss"), ("rewards/margins", "reward margin"),
                  ("rewards/accuracies", "preference accuracy"), ("val_rewards/accuracies", "val accuracy"))
    + SPEED_CARDS,
    plots=(Plot("Loss", {"loss": "train loss", "val_loss": "val loss"}),
           Plot("Implicit rewards", {"rewards/chosen": "chosen", "rewards/rejected": "rejected",
                                     "rewards/margins": "margin"})),
    form_fields=("model_id", "dataset_id", "project_ids", "include_arena", "beta", "loss_type", "full", "lora_r",
                 "max_steps", "batch_size", "block_size", "lr", "eval_every", "seed", "name"),
)
