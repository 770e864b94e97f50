"""The `reward` kind: train a reward model on preference pairs, from a base or SFT model.

The pairs come from an uploaded preference dataset, labeling projects (their consensus pairs) and/or
arena votes, snapshotted to the run when it first starts (worker/preference_pairs.py). The output is a
Model of kind reward whose parent is the model it started from.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import DatasetKind, JobKind, LabelingProject, ModelKind
from db.settings import Settings
from llm.params import Setting, settings_of
from llm.reward_config import REWARD_DEFAULTS, RewardConfig
from llm.train_config import FineTuningDefaults
from worker.jobs.context import JobContext, Outcome, dataset_path
from worker.jobs.spec import MODEL_ID, MODEL_NAME, SPEED_CARDS, JobKindSpec, Plot
from worker.jobs.fit import check_schedule
from worker.jobs.params import JobParamsError, fine_tuning_loop_params

# Where the pairs come from; at least one must be given (checked in `check_pair_sources`). Shared with DPO.
PAIR_SOURCES = {
    "dataset_id": Setting("int", minimum=1, label="preference dataset",
                          help="id of an uploaded preference dataset (prompt / chosen / rejected)"),
    "project_ids": Setting("str", label="labeling projects",
                           help="ids of labeling projects whose consensus pairs to use, comma-separated"),
    "include_arena": Setting("bool", default=False, label="arena votes",
                             help="also use every arena vote that has a winner"),
}


def check_pair_sources(session: Session, params: dict[str, Any]) -> None:
    from worker.jobs.preference_pairs import parse_project_ids

    try:
        project_ids = parse_project_ids(params.get("project_ids"))
    except ValueError as error:
        raise JobParamsError("project_ids", str(error)) from None
    for project_id in project_ids:
        if session.get(LabelingProject, project_id) is None:
            raise JobParamsError("project_ids", f"no labeling project with id {project_id}")
    params["project_ids"] = ",".join(str(i) for i in project_ids)
    if params.get("dataset_id") is None and not project_ids and not params.get("include_arena"):
        raise JobParamsError("dataset_id", "choose where the pairs come from: a preference dataset, labeling "
                                           "projects or the arena")


def snapshot(ctx: JobContext) -> list[dict]:
    from worker.jobs.preference_pairs import parse_project_ids, snapshot_pairs

    return snapshot_pairs(ctx.run_dir, ctx.session, dataset_file=dataset_path(ctx) if ctx.dataset else None,
                          project_ids=parse_project_ids(ctx.params.get("project_ids")),
                          include_arena=bool(ctx.params.get("include_arena")), log=ctx.log)


def preference_params(config_class: type, defaults: FineTuningDefaults) -> dict[str, Setting]:
    """The params of a kind that learns from pairs (reward, DPO): the model, the pair sources, its config's
    settings and the loop's, whose learning rate defaults by LoRA or all weights."""
    return {
        "model_id": MODEL_ID,
        **PAIR_SOURCES,
        "name": MODEL_NAME,
        **settings_of(config_class),
        **fine_tuning_loop_params(defaults),
    }


def preference_check(declared: dict[str, Setting], defaults: FineTuningDefaults):
    """The `check` of such a kind: pair sources, the learning rate filled in (so the row says what runs), schedule."""
    def check(session: Session, params: dict[str, Any], settings: Settings) -> None:
        check_pair_sources(session, params)
        params["lr"] = defaults.learning_rate(params["full"], params.get("lr"))
        check_schedule(params, declared)

    return check


PARAMS = preference_params(RewardConfig, REWARD_DEFAULTS)
REWARD_FIELDS = tuple(settings_of(RewardConfig))
check = preference_check(PARAMS, REWARD_DEFAULTS)


def run(ctx: JobContext) -> Outcome:
    from llm.reward import reward
    from worker.jobs.training import run_training

    reward_config = RewardConfig(**{name: ctx.params[name] for name in REWARD_FIELDS if name in ctx.params})
    pairs = snapshot(ctx)
    base_dir = ctx.input_model_dir()
    ctx.log(f"training a reward model from model {ctx.input_model.id} ({ctx.input_model.name!r}) on "
            f"{len(pairs):,} pairs ({'all weights' if reward_config.full else f'LoRA r={reward_config.lora_r}'})")
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


REWARD_PLOT = Plot("Preference accuracy", {"accuracy": "train", "val_accuracy": "val"})
SPEC = JobKindSpec(
    kind=JobKind.reward, title="Reward model",
    description="Train a reward model on preference pairs (Bradley-Terry): a scalar score on the model's last "
                "hidden state that ranks the chosen answer above the rejected one.",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.preference,),
    model_kinds=(ModelKind.base, ModelKind.sft), produces=ModelKind.reward, check=check,
    metric_cards=(("step", "step"), ("loss", "loss"), ("accuracy", "accuracy"), ("val_accuracy", "val accuracy"),
                  ("margin", "margin")) + SPEED_CARDS,
    plots=(Plot("Loss", {"loss": "train loss", "val_loss": "val loss"}), REWARD_PLOT),
    form_fields=("model_id", "dataset_id", "project_ids", "include_arena", "full", "lora_r", "max_steps",
                 "batch_size", "block_size", "lr", "eval_every", "seed", "name"),
)
