"""What a job kind declares: one `JobKindSpec` per kind, in its own module under `worker/kinds/`.

A kind's declaration holds everything the rest of the system needs to know about it:
  - `params`: every parameter with type, default, bounds and help (`llm.params.Setting`), from which
    validation (`worker.jobs.lifecycle.validate_params`), the REST schema, the Train forms and the CLI derive;
  - `dataset_kinds` / `model_kinds`: what its `dataset_id` / `model_id` may point at;
  - `handler`: the function the worker runs (it receives a `worker.jobs.context.JobContext`);
  - `produces`: the kind of Model row a success adds, if any;
  - `metric_cards` and `plots`: what the Jobs tab shows while it runs;
  - `check`: cross-field checks that need the database or other parameters (it may also fill in a
    default that depends on another parameter, so the stored row says what runs).

This module imports no torch and no web code: the web process reads declarations cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from db.models import DatasetKind, JobKind, ModelKind
from llm.params import Setting

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from db.settings import Settings
    from worker.jobs.context import JobContext, Outcome


@dataclass(frozen=True)
class Plot:
    """One chart of the Jobs tab: a title and the metrics drawn as its series (name -> legend)."""

    title: str
    series: dict[str, str]


@dataclass(frozen=True)
class JobKindSpec:
    kind: JobKind
    title: str                                   # "Pretrain", "Fine-tune (SFT)"
    description: str                             # one sentence for forms and docs
    params: dict[str, Setting]
    handler: Callable[["JobContext"], "Outcome"]
    dataset_kinds: tuple[DatasetKind, ...] = ()
    model_kinds: tuple[ModelKind, ...] = ()
    produces: ModelKind | None = None
    metric_cards: tuple[tuple[str, str], ...] = (("step", "step"),)
    plots: tuple[Plot, ...] = ()
    check: Callable[["Session", dict[str, Any], "Settings"], None] | None = None
    form_fields: tuple[str, ...] = field(default=())  # the params a Train form shows first, in order


# Parameters several kinds share, declared once.
DATASET_ID = Setting("int", required=True, minimum=1, help="id of an uploaded dataset", label="dataset")
MODEL_ID = Setting("int", required=True, minimum=1, help="id of the model to start from", label="model")
TOKENIZER = Setting("str", default="gpt2", help="gpt2, cl100k or the name of a trained tokenizer")
MODEL_NAME = Setting("str", help="name of the model this run produces (default: <kind>-<job id>)",
                     label="model name")

# Curves every training kind draws.
LOSS_PLOT = Plot("Loss", {"loss": "train loss", "val_loss": "val loss"})
TRAINING_CARDS = (("step", "step"), ("loss", "loss"), ("val_loss", "val loss"))
SPEED_CARDS = (("tokens_per_s", "tokens/s"), ("lr", "learning rate"))
