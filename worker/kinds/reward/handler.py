"""The `reward` kind's handler: snapshot the pairs to the run (shared with DPO), then train a reward model
(`llm.reward`) and report its held-out accuracy."""

from __future__ import annotations

from typing import Any

from db.models import ModelKind
from llm.reward_config import RewardConfig
from worker.jobs.context import JobContext, Outcome, dataset_path
from worker.jobs.params import fine_tuning_config, method_said
from worker.jobs.preference_pairs import parse_project_ids, snapshot_pairs
from worker.jobs.training import run_training


def snapshot(ctx: JobContext) -> list[dict]:
    """The pairs of the job's sources (a preference dataset, labeling projects, arena votes), written to its run
    when it first starts and read back from there by a resumed attempt."""
    return snapshot_pairs(ctx.run_dir, ctx.session, dataset_file=dataset_path(ctx) if ctx.dataset else None,
                          project_ids=parse_project_ids(ctx.params.get("project_ids")),
                          include_arena=bool(ctx.params.get("include_arena")), log=ctx.log)


def run(ctx: JobContext) -> Outcome:
    from llm.reward import reward

    reward_config = fine_tuning_config(RewardConfig, ctx.params)
    pairs = snapshot(ctx)
    base_dir = ctx.input_model_dir()
    ctx.log(f"training a reward model from model {ctx.input_model.id} ({ctx.input_model.name!r}) on "
            f"{len(pairs):,} pairs ({method_said(ctx.params)}; learning rate {ctx.params['lr']:g})")
    facts: dict[str, Any] = {}

    def train(train_config):
        result = reward(base_dir, pairs, ctx.run_dir, reward_config=reward_config, train_config=train_config,
                        data_dir=ctx.data_dir, on_metrics=ctx.on_metrics, should_stop=ctx.should_stop, log=ctx.log)
        facts.update(result)
        return result

    outcome = run_training(ctx, train, produces=ModelKind.reward, parent_model_id=ctx.input_model.id)
    report = facts.get("report") or {}
    if not outcome.stopped and report.get("overall"):
        overall = report["overall"]
        outcome.summary += (f"; {'held-out' if report.get('held_out') else 'training'} accuracy "
                            f"{overall['accuracy']:.1%} on {overall['pairs']:,} pairs")
    return outcome
