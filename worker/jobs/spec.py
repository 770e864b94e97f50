"""What a job kind declares: one `JobKindSpec` per kind, in its folder under `worker/kinds/` (`spec.py`).

A kind's declaration holds everything the rest of the system needs to know about it:
  - `params`: every parameter with type, default, bounds and help (`llm.params.Setting`), from which
    validation (`worker.jobs.lifecycle.validate_params`), the REST schema, the Train forms and the CLI derive;
  - `dataset_kinds` / `model_kinds`: what its `dataset_id` / `model_id` may point at;
  - `handler`: the function the worker runs (it receives a `worker.jobs.context.JobContext`; `handler.py`);
  - `produces`: the kind of Model row a success adds, if any;
  - `metric_cards` and `plots`: what the Jobs tab shows while it runs; `report_card` and `run_report`: the rows
    a model it made shows in the Models tab's report card (`card.py`);
  - `check`: cross-field checks that need the database or other parameters (it may also fill in a
    default that depends on another parameter, so the stored row says what runs);
  - `estimate`: the run's size before it is queued (`estimate.py`), the one function the form's preview and
    the submit check (`check`) both call;
  - `form_fields` and `form`: which params its Train sub-tab shows first, and how the sub-tab is named (the
    web builds the sub-tab from the rest; what it has of its own is in the kind's optional `form.py`).

This module imports no torch and no web code: the web process reads declarations cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from db.models import DatasetKind, ModelKind
from llm.params import Setting

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from db.settings import Settings
    from worker.jobs.context import JobContext, Outcome
    from worker.jobs.fit import RunEstimate


@dataclass(frozen=True)
class Plot:
    """One chart of the Jobs tab: a title and the metrics drawn as its series (name -> legend), against the step
    or, with `x`, against another metric's value at the same step (the range test's loss against its learning
    rate); `log_x` draws log10 of it (the chart has no log axis)."""

    title: str
    series: dict[str, str]
    x: str = "step"
    log_x: bool = False
    x_title: str = "step"


@dataclass(frozen=True)
class ReportRow:
    """One row of a model's report card: a final metric of the job that made it, its label and how it is shown
    (a `str.format` pattern)."""

    metric: str
    label: str
    format: str = "{:.4f}"

    def shown(self, value: float) -> str:
        return self.format.format(value)


@dataclass(frozen=True)
class TrainFormNames:
    """How a kind's Train sub-tab is named (everything else on it derives from the declaration): the tab's label
    and id, the prefix of its elements' ids (`<prefix>-submit`, `<prefix>-dataset`, ...; the browser tests
    address them) and a sentence shown after the kind's description."""

    prefix: str
    tab: str
    tab_id: str
    intro: str = ""


@dataclass(frozen=True)
class JobKindSpec:
    kind: str                                    # its name: the registry's key, a job row's kind
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
    # The run's size before it is queued: None when the params leave nothing to estimate from.
    estimate: Callable[["Session", dict[str, Any], "Settings"], "RunEstimate | None"] | None = None
    report_card: tuple[ReportRow, ...] = ()
    # More report-card rows read from the finished run's directory (e.g. DPO's KL estimate).
    run_report: Callable[[Path], list[tuple[str, str]]] | None = None
    form_fields: tuple[str, ...] = field(default=())  # the params a Train form shows first, in order
    form: TrainFormNames | None = None                # default: the kind's name and title

    @property
    def form_names(self) -> TrainFormNames:
        return self.form or TrainFormNames(prefix=str(self.kind), tab=self.title, tab_id=str(self.kind))


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
# Report-card rows every training kind's model shows.
VAL_LOSS_ROW = ReportRow("val_loss", "validation loss")
TOKENS_ROW = ReportRow("tokens", "tokens seen", "{:,.0f}")
