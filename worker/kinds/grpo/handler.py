"""The `grpo` kind's handler: GRPO of the input policy (`llm.grpo`) on the prompts dataset, scored by the chosen
verifier and/or reward model; reports the held-out reward, pass rate and KL in the summary."""

from __future__ import annotations

from typing import Any

from db.models import Model, ModelKind
from llm.grpo_config import GRPOConfig
from worker.jobs.context import JobContext, Outcome, dataset_path, stored_path
from worker.jobs.params import fine_tuning_config, method_said
from worker.jobs.training import run_training


def run(ctx: JobContext) -> Outcome:
    from llm.grpo import grpo

    grpo_config = fine_tuning_config(GRPOConfig, ctx.params)
    policy_dir = ctx.input_model_dir()
    reward_model_id = ctx.params.get("reward_model_id")
    reward_model_dir = None
    if reward_model_id is not None:
        reward_model_dir = stored_path(ctx, ctx.session.get(Model, reward_model_id), "reward model")
    scored_by = ", ".join(filter(None, [grpo_config.verifier if grpo_config.verifier != "none" else None,
                                        f"reward model {reward_model_id}" if reward_model_id else None]))
    ctx.log(f"GRPO of model {ctx.input_model.id} ({ctx.input_model.name!r}) on dataset {ctx.dataset.id}, "
            f"{grpo_config.num_generations} answers per prompt scored by {scored_by} ({grpo_config.loss_type}, "
            f"beta {grpo_config.beta:g}, {method_said(ctx.params)}; learning rate {ctx.params['lr']:g})")
    facts: dict[str, Any] = {}

    def train(train_config):
        result = grpo(policy_dir, dataset_path(ctx), ctx.run_dir, grpo_config=grpo_config, train_config=train_config,
                      reward_model_dir=reward_model_dir, data_dir=ctx.data_dir, on_metrics=ctx.on_metrics,
                      should_stop=ctx.should_stop, resume=True, log=ctx.log)
        facts.update(result)
        return result

    outcome = run_training(ctx, train, produces=ModelKind.grpo, parent_model_id=ctx.input_model.id)
    if outcome.stopped:
        return outcome
    prompts = "held-out" if facts.get("held_out") else "training"
    if facts.get("val_reward") is not None:
        outcome.summary += f"; {prompts} reward {facts['val_reward']:.3f}"
    if facts.get("val_pass_rate") is not None:
        outcome.summary += f", pass rate {facts['val_pass_rate']:.1%}"
    if facts.get("val_kl") is not None:
        outcome.summary += f", KL from the start {facts['val_kl']:.4f} nats per token"
    return outcome
