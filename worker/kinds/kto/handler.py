"""The `kto` kind's handler: the examples snapshotted to the run (worker/jobs/feedback_examples.py), then KTO of the
input policy (`llm.kto`), reporting its held-out reward margin and KL in the summary."""

from __future__ import annotations

from typing import Any

from db.models import ModelKind
from llm.kto_config import KTOConfig
from worker.jobs.context import JobContext, Outcome, dataset_path
from worker.jobs.feedback_examples import snapshot_examples
from worker.jobs.params import fine_tuning_config, method_said
from worker.jobs.preference_pairs import parse_project_ids
from worker.jobs.training import add_warning, run_training


def sources(params: dict[str, Any]) -> dict[str, Any]:
    """The sources a job's params name besides its dataset, as `gather_examples` takes them."""
    return {"project_ids": parse_project_ids(params.get("project_ids")),
            "include_thumbs": bool(params.get("include_thumbs")),
            "thumbs_model_ids": parse_project_ids(params.get("thumbs_model_ids"))}


def run(ctx: JobContext) -> Outcome:
    from llm.kto import kto

    kto_config = fine_tuning_config(KTOConfig, ctx.params)
    items = snapshot_examples(ctx.run_dir, ctx.session, log=ctx.log,
                              dataset_file=dataset_path(ctx) if ctx.dataset else None,
                              dataset_kind=ctx.dataset.kind.value if ctx.dataset else None, **sources(ctx.params))
    good = sum(1 for item in items if item["label"])
    policy_dir = ctx.input_model_dir()
    ctx.log(f"KTO of model {ctx.input_model.id} ({ctx.input_model.name!r}) on {len(items):,} answers ({good:,} good, "
            f"{len(items) - good:,} bad; {kto_config.loss_type}, beta {kto_config.beta}, {method_said(ctx.params)}; "
            f"learning rate {ctx.params['lr']:g})")
    facts: dict[str, Any] = {}

    def train(train_config):
        result = kto(policy_dir, items, ctx.run_dir, kto_config=kto_config, train_config=train_config,
                     data_dir=ctx.data_dir, on_metrics=ctx.on_metrics, should_stop=ctx.should_stop, log=ctx.log)
        facts.update(result)
        return result

    outcome = run_training(ctx, train, produces=ModelKind.kto, parent_model_id=ctx.input_model.id)
    if outcome.stopped:
        return outcome
    if facts.get("val_rewards/margins") is not None:
        held = "held-out" if facts.get("held_out") else "training"
        outcome.summary += f"; {held} reward margin (good - bad) {facts['val_rewards/margins']:+.3f}"
        if facts.get("val_kl") is not None:
            outcome.summary += f", KL estimate {facts['val_kl']:.3f}"
    # The run is kept, but the watch flagged it or the classes' weights look off: said in the log, summary, notice.
    warnings = [w for w in (facts.get("degeneration"), facts.get("weight_advice")) if w]
    add_warning(ctx, outcome, "; ".join(warnings) or None)
    return outcome
