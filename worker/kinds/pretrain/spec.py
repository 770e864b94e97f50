"""The `pretrain` kind's declaration: a base model trained from scratch on a text dataset (tokenized on first
use)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import DatasetKind, ModelKind
from db.settings import Settings
from llm.params import Setting, settings_of
from llm.pretrain_config import PretrainConfig
from llm.train_config import TrainConfig
from worker.jobs.fit import check_memory, check_schedule, check_text_dataset_fits_block
from worker.jobs.params import PLACEMENT_PARAMS, JobParamsError, with_defaults
from worker.jobs.spec import DATASET_ID, MODEL_NAME, TOKENIZER, JobKindSpec, TrainFormNames
from worker.kinds.pretrain.card import METRIC_CARDS, PLOTS, REPORT_CARD
from worker.kinds.pretrain.estimate import estimate
from worker.kinds.pretrain.handler import run, trained_tokenizer_name

PARAMS = {
    "dataset_id": DATASET_ID,
    "tokenizer": TOKENIZER,
    # A tokenizer that fits the model, trained on the dataset as the job's first stage (handler.py): the form's
    # estimate proposes a size when the vocabulary head is most of the work (estimate.py's tokenizer_advice).
    "new_tokenizer_vocab": Setting("int", minimum=257, maximum=262_144, label="train a tokenizer first",
                                   help="vocabulary of a BPE tokenizer trained on this dataset before pretraining "
                                        "(used instead of the tokenizer above; kept for later runs); empty: "
                                        "use the tokenizer above"),
    "name": MODEL_NAME,
    **settings_of(PretrainConfig),  # the preset and the shape a run may change
    # The device is left to the worker unless the job pins one.
    **with_defaults(settings_of(TrainConfig), {"device": None}),
    **PLACEMENT_PARAMS,  # devices, nodes: where it runs (the queue and the worker's launcher read them)
}


def check(session: Session, params: dict[str, Any], settings: Settings) -> None:
    run_estimate = estimate(session, params, settings)  # an unknown preset or a bad shape is refused first
    if params.get("new_tokenizer_vocab"):  # the job says which tokenizer it trains and uses: its row tells later
        params["tokenizer"] = trained_tokenizer_name(params["dataset_id"], params["new_tokenizer_vocab"])
    if params.get("min_lr") is not None and params["min_lr"] > params["lr"]:
        raise JobParamsError("min_lr", "must not be greater than lr")
    check_schedule(params, PARAMS)
    check_memory(run_estimate, params, settings, declared=PARAMS)
    check_text_dataset_fits_block(session, params, settings)


SPEC = JobKindSpec(
    kind="pretrain", title="Pretrain",
    description="Pretrain a base model on a text dataset; the data is tokenized the first time a "
                "dataset/tokenizer pair is used.",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.text,), produces=ModelKind.base, check=check,
    estimate=estimate, metric_cards=METRIC_CARDS, plots=PLOTS, report_card=REPORT_CARD,
    form_fields=("dataset_id", "tokenizer", "new_tokenizer_vocab", "preset", "max_steps", "batch_size", "block_size", "lr", "warmup",
                 "eval_every", "checkpoint_every", "seed", "name"),
    form=TrainFormNames(prefix="pt", tab="Pretrain", tab_id="pretrain", intro="The job shows up in **Jobs**."),
)
