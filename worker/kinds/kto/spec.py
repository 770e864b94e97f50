"""The `kto` kind's declaration: Kahneman-Tversky Optimization of an SFT (or base) model on unpaired feedback.

The examples come from a feedback dataset (TRL's unpaired prompt / completion / label; a preference dataset is
unpaired), chat thumbs and labeling projects (worker/jobs/feedback_examples.py), snapshotted to the run when it first
starts. Submit refuses a run whose sources give no good or no bad answer (KTO needs both), one that cannot fit the
workers, and a batch of one example (the KL estimate pairs each prompt with another example's answer). The output is
a chat model of kind kto whose parent is the policy it started from (an adapter of it with LoRA).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import LANGUAGE_MODEL_KINDS, Dataset, DatasetKind, LabelingProject, Model, ModelKind
from db.settings import Settings, safe_join
from llm.kto_config import KTO_DEFAULTS, KTOConfig
from llm.params import Setting, settings_of
from worker.jobs.feedback_examples import class_problem, gather_examples
from worker.jobs.fit import check_memory, check_schedule
from worker.jobs.params import JobParamsError, fine_tuning_loop_params, resolve_fine_tuning
from worker.jobs.preference_pairs import parse_project_ids
from worker.jobs.spec import MODEL_ID, MODEL_NAME, JobKindSpec, TrainFormNames
from worker.kinds.kto.card import METRIC_CARDS, PLOTS, REPORT_CARD, run_report
from worker.kinds.kto.estimate import estimate
from worker.kinds.kto.handler import run, sources

# Where the answers come from; at least one must be given.
FEEDBACK_SOURCES = {
    "dataset_id": Setting("int", minimum=1, label="feedback dataset",
                          help="id of an uploaded feedback dataset (prompt / completion / label), or of a preference "
                               "dataset (its chosen answers good, its rejected ones bad)"),
    "include_thumbs": Setting("bool", default=False, label="chat thumbs",
                              help="the 👍 / 👎 people gave answers in the Chat tab"),
    "thumbs_model_ids": Setting("str", label="thumbs of models",
                                help="only the thumbs on these models' answers, comma-separated ids; empty: every "
                                     "model's"),
    "project_ids": Setting("str", label="labeling projects",
                           help="ids of labeling projects, comma-separated: a 'both bad' consensus makes both answers "
                                "bad examples, an A or B one the preferred answer good and the other bad"),
}

PARAMS = {"model_id": MODEL_ID, **FEEDBACK_SOURCES, "name": MODEL_NAME, **settings_of(KTOConfig),
          **fine_tuning_loop_params(KTO_DEFAULTS)}


def _ids(params: dict[str, Any], name: str) -> list[int]:
    try:
        ids = parse_project_ids(params.get(name))
    except ValueError as error:
        raise JobParamsError(name, str(error)) from None
    params[name] = ",".join(str(i) for i in ids)
    return ids


def dataset_counts(dataset: Dataset | None) -> tuple[int, int] | None:
    """(good, bad) answers of a dataset as its upload counted them (llm/stats.py), or None when it did not."""
    stats = (dataset.stats or {}) if dataset is not None else {}
    if dataset is not None and dataset.kind == DatasetKind.feedback and isinstance(stats.get("good"), int):
        return stats["good"], stats.get("bad", 0)
    if dataset is not None and dataset.kind == DatasetKind.preference and isinstance(stats.get("pairs"), int):
        return stats["pairs"], stats["pairs"]  # unpaired: each pair gives one good and one bad answer
    return None


def check_sources(session: Session, params: dict[str, Any], settings: Settings) -> None:
    """The sources exist, at least one is chosen, and together they give good and bad answers (gathered as the
    job would gather them if it started now)."""
    for project_id in _ids(params, "project_ids"):
        if session.get(LabelingProject, project_id) is None:
            raise JobParamsError("project_ids", f"no labeling project with id {project_id}")
    for model_id in _ids(params, "thumbs_model_ids"):
        if session.get(Model, model_id) is None:
            raise JobParamsError("thumbs_model_ids", f"no model with id {model_id}")
    if params.get("dataset_id") is None and not params["project_ids"] and not params.get("include_thumbs"):
        raise JobParamsError("dataset_id", "choose where the answers come from: a feedback dataset, chat thumbs or "
                                           "labeling projects")
    dataset = session.get(Dataset, params["dataset_id"]) if params.get("dataset_id") is not None else None
    counted = dataset_counts(dataset)  # from the upload's statistics: a big file is not read again at submit
    try:
        items = gather_examples(session, dataset_file=safe_join(settings.data_dir, dataset.path)
                                if dataset is not None and counted is None else None,
                                dataset_kind=dataset.kind.value if dataset else None, **sources(params))
    except (ValueError, OSError) as error:
        raise JobParamsError("dataset_id", f"cannot read the answers: {error}") from None
    good, bad = counted or (0, 0)
    items += [{"label": True}] * good + [{"label": False}] * bad
    problem = class_problem(items)
    if problem:
        field = "dataset_id" if dataset else ("include_thumbs" if params.get("include_thumbs") else "project_ids")
        raise JobParamsError(field, problem)


def check(session: Session, params: dict[str, Any], settings: Settings) -> None:
    check_sources(session, params, settings)
    if params.get("loss_type", "kto") == "kto" and params.get("batch_size", 2) < 2:
        raise JobParamsError("batch_size", "must be at least 2 for the kto loss: its KL estimate pairs each prompt "
                                           "with another example's answer in the batch")
    resolve_fine_tuning(params, KTO_DEFAULTS, session.get(Model, params["model_id"]).config)
    check_schedule(params, PARAMS)
    check_memory(estimate(session, params, settings), params, settings, declared=PARAMS)


SPEC = JobKindSpec(
    kind="kto", title="KTO",
    description="Kahneman-Tversky Optimization: make answers people marked good more likely and those marked bad "
                "less, relative to where the model started. Learns from single thumbs, no pairs needed.",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.feedback, DatasetKind.preference),
    model_kinds=LANGUAGE_MODEL_KINDS, produces=ModelKind.kto,
    check=check, estimate=estimate,
    metric_cards=METRIC_CARDS, plots=PLOTS, report_card=REPORT_CARD, run_report=run_report,
    form_fields=("model_id", "dataset_id", "include_thumbs", "thumbs_model_ids", "project_ids", "beta",
                 "desirable_weight", "undesirable_weight", "loss_type", "method", "lora_r", "max_steps", "batch_size",
                 "block_size", "lr", "eval_every", "seed", "name"),
    form=TrainFormNames(prefix="kto", tab="KTO", tab_id="kto",
                        intro="Start from an SFT model and answers marked good or bad; the result is a chat model."),
)
