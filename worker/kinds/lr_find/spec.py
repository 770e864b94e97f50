"""The `lr_find` kind's declaration: the learning-rate range test (llm/lr_find.py) for people who want to pick the
rate themselves. On a text dataset it tests pretraining a new model of `preset` (the data tokenized on first use,
as the pretrain kind does); on a chat dataset, fine-tuning (SFT) the model `model_id` with `method`. It produces no
model: its Jobs-tab chart is the loss against the rate, with the suggested rate marked and named in its summary.

Why a kind and not a button on the Train forms: it runs the real loop on the worker's device (minutes on a CPU),
so it needs what a job has (a queue, progress, cancel, a log), and the Jobs tab already draws a kind's declared
charts from its metrics: the form and the chart come from this declaration.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import Dataset, DatasetKind, ModelKind
from db.settings import Settings
from llm.lr_find import LRFindConfig, loop_settings
from llm.params import Setting, settings_of
from llm.pretrain_config import PretrainConfig
from llm.sft_config import SFTConfig
from llm.train_config import TrainConfig
from worker.jobs.params import JobParamsError, with_defaults
from worker.jobs.spec import DATASET_ID, TOKENIZER, JobKindSpec, TrainFormNames
from worker.kinds.lr_find.card import METRIC_CARDS, PLOTS
from worker.kinds.lr_find.handler import run

PARAMS = {
    "dataset_id": Setting("int", required=True, minimum=1, label="dataset",
                          help="a text dataset (tests pretraining) or a chat dataset (tests SFT of the model)"),
    "model_id": Setting("int", minimum=1, label="model",
                        help="with a chat dataset: the model to fine-tune; with a text dataset: leave empty"),
    "tokenizer": TOKENIZER,
    **settings_of(LRFindConfig),
    **settings_of(PretrainConfig),
    **settings_of(SFTConfig),
    # The device is left to the worker unless the job pins one; the schedule is the test's.
    **loop_settings(with_defaults(settings_of(TrainConfig), {"device": None})),
}


def check(session: Session, params: dict[str, Any], settings: Settings) -> None:
    """A chat dataset needs the model to fine-tune; a text dataset trains a new one, so it takes none."""
    dataset = session.get(Dataset, params["dataset_id"])
    chat = dataset is not None and dataset.kind == DatasetKind.chat
    if chat and params.get("model_id") is None:
        raise JobParamsError("model_id", "is required with a chat dataset: the model whose fine-tuning is tested")
    if not chat and params.get("model_id") is not None:
        raise JobParamsError("model_id", "must be empty with a text dataset: the test pretrains a new model of "
                                         "`preset`")
    if params["end_lr"] <= params["start_lr"]:
        raise JobParamsError("end_lr", f"must be above start_lr ({params['start_lr']:g})")


SPEC = JobKindSpec(
    kind="lr_find", title="Learning-rate range test",
    description="A short run whose learning rate rises from 1e-7 to 1: the loss against the rate, and a suggested "
                "rate (a tenth of where the loss was lowest).",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.text, DatasetKind.chat),
    model_kinds=(ModelKind.base, ModelKind.sft), check=check, metric_cards=METRIC_CARDS, plots=PLOTS,
    form_fields=("dataset_id", "model_id", "tokenizer", "preset", "method", "steps", "start_lr", "end_lr",
                 "batch_size", "block_size"),
    form=TrainFormNames(prefix="lrf", tab="LR range test", tab_id="lr-find",
                        intro="For picking a learning rate yourself: a **text** dataset tests pretraining a new "
                              "model, a **chat** dataset tests fine-tuning the model you choose. The chart is in "
                              "**Jobs**."),
)
