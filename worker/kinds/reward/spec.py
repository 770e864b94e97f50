"""The `reward` kind's declaration: a reward model trained on preference pairs, from a base or SFT model.

The pairs come from an uploaded preference dataset, labeling projects (their consensus pairs) and/or
arena votes, snapshotted to the run when it first starts (worker/jobs/preference_pairs.py). The output is a
Model of kind reward whose parent is the model it started from. The DPO kind takes its pairs the same way
(`preference_params`, `preference_check`).
"""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy.orm import Session

from db.models import DatasetKind, LabelingProject, Model, ModelKind
from db.settings import Settings
from llm.params import Setting, settings_of
from llm.reward_config import REWARD_DEFAULTS, RewardConfig
from llm.train_config import FineTuningDefaults
from worker.jobs.fit import RunEstimate, check_memory, check_schedule
from worker.jobs.params import JobParamsError, fine_tuning_loop_params, resolve_fine_tuning
from worker.jobs.preference_pairs import parse_project_ids
from worker.jobs.spec import MODEL_ID, MODEL_NAME, JobKindSpec, TrainFormNames
from worker.kinds.reward.card import METRIC_CARDS, PLOTS, REPORT_CARD, run_report
from worker.kinds.reward.estimate import estimate
from worker.kinds.reward.handler import run

# Where the pairs come from; at least one must be given (checked in `check_pair_sources`). Shared with DPO.
PAIR_SOURCES = {
    "dataset_id": Setting("int", minimum=1, label="preference dataset",
                          help="id of an uploaded preference dataset (prompt / chosen / rejected)"),
    "project_ids": Setting("str", label="labeling projects",
                           help="ids of labeling projects whose consensus pairs to use, comma-separated"),
    "include_arena": Setting("bool", default=False, label="arena votes",
                             help="also use every arena vote that has a winner"),
}


Estimate = Callable[[Session, dict[str, Any], Settings], RunEstimate | None]


def check_pair_sources(session: Session, params: dict[str, Any]) -> None:
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


def preference_params(config_class: type, defaults: FineTuningDefaults) -> dict[str, Setting]:
    """The params of a kind that learns from pairs (reward, DPO): the model, the pair sources, its config's
    settings and the loop's, whose learning rate defaults by the method and the model's width."""
    return {
        "model_id": MODEL_ID,
        **PAIR_SOURCES,
        "name": MODEL_NAME,
        **settings_of(config_class),
        **fine_tuning_loop_params(defaults),
    }


def preference_check(declared: dict[str, Setting], defaults: FineTuningDefaults, estimate: Estimate):
    """The `check` of such a kind: pair sources, the method and learning rate resolved on the model (so the row
    says what runs), schedule, and whether the run fits the workers (its kind's `estimate`)."""
    def check(session: Session, params: dict[str, Any], settings: Settings) -> None:
        check_pair_sources(session, params)
        resolve_fine_tuning(params, defaults, session.get(Model, params["model_id"]).config)
        check_schedule(params, declared)
        check_memory(estimate(session, params, settings), params, settings, declared=declared)

    return check


PARAMS = preference_params(RewardConfig, REWARD_DEFAULTS)

SPEC = JobKindSpec(
    kind="reward", title="Reward model",
    description="Train a reward model on preference pairs (Bradley-Terry): a scalar score on the model's last "
                "hidden state that ranks the chosen answer above the rejected one.",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.preference,),
    model_kinds=(ModelKind.base, ModelKind.sft), produces=ModelKind.reward,
    check=preference_check(PARAMS, REWARD_DEFAULTS, estimate), estimate=estimate,
    metric_cards=METRIC_CARDS, plots=PLOTS, report_card=REPORT_CARD, run_report=run_report,
    form_fields=("model_id", "dataset_id", "project_ids", "include_arena", "method", "lora_r", "max_steps",
                 "batch_size", "block_size", "lr", "eval_every", "seed", "name"),
    form=TrainFormNames(prefix="rm", tab="Reward model", tab_id="reward",
                        intro="Best-of-N in Chat and DPO's evaluation use it."),
)
