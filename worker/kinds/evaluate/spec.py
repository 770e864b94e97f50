"""The `evaluate` kind's declaration: one or several language models on one dataset, a text dataset (its
validation split: loss, perplexity, bits per byte) or a benchmark (multiple choice: acc, acc_norm ± stderr)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import LANGUAGE_MODEL_KINDS, SQL_INTEGER_MAX, Dataset, DatasetKind, Model
from db.settings import Settings
from llm.evaluate_config import EvaluateConfig
from llm.params import Setting, settings_of
from worker.jobs.params import JobParamsError
from worker.jobs.references import check_reference
from worker.jobs.spec import DATASET_ID, JobKindSpec
from worker.kinds.evaluate.card import METRIC_CARDS
from worker.kinds.evaluate.handler import run

# Models that predict tokens (not reward models).
MODEL_KINDS = LANGUAGE_MODEL_KINDS
MAX_MODELS = 16

PARAMS = {
    "model_ids": Setting("ids", required=True, minimum=1, maximum=SQL_INTEGER_MAX, max_length=MAX_MODELS,
                         label="models", help="ids of the models to compare, e.g. 3, 5 (one is fine too)"),
    "dataset_id": Setting(**{**vars(DATASET_ID), "help": "a benchmark dataset (multiple choice: acc, acc_norm) or "
                                                         "a text dataset (its validation split: loss, perplexity, "
                                                         "bits per byte)"}),
    **settings_of(EvaluateConfig),
}
# Settings that apply to one kind of dataset only: (the dataset kind, the setting for the other kind).
ONLY_FOR = {"max_questions": (DatasetKind.benchmark, "max_batches"), "max_batches": (DatasetKind.text, "max_questions")}


def check(session: Session, params: dict[str, Any], settings: Settings) -> None:
    for model_id in params["model_ids"]:
        check_reference(session, SPEC, "model_ids", Model, model_id, MODEL_KINDS)
    dataset_kind = session.get(Dataset, params["dataset_id"]).kind
    for name, (kind, other) in ONLY_FOR.items():
        if params.get(name) is not None and dataset_kind != kind:
            raise JobParamsError(name, f"applies to {kind.value} datasets only; dataset {params['dataset_id']} is a "
                                       f"{dataset_kind.value} dataset (its limit is {other})")


SPEC = JobKindSpec(
    kind="evaluate", title="Evaluate",
    description="Compare models on a multiple-choice benchmark (each choice's log-likelihood, as "
                "lm-evaluation-harness scores HellaSwag and ARC: acc and acc_norm with standard errors) or on a "
                "text dataset's validation split (loss, perplexity, bits per byte).",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.benchmark, DatasetKind.text), model_kinds=MODEL_KINDS,
    check=check, metric_cards=METRIC_CARDS,
    form_fields=("model_ids", "dataset_id", "batch_size", "max_questions", "max_batches"),
)
