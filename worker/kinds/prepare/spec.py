"""The `prepare` kind's declaration: clean, deduplicate, split and tokenize a text dataset into token files."""

from __future__ import annotations

from db.models import DatasetKind, JobKind
from llm.params import Setting
from worker.jobs.spec import DATASET_ID, TOKENIZER, JobKindSpec
from worker.kinds.prepare.handler import run

PARAMS = {
    "dataset_id": DATASET_ID,
    "tokenizer": TOKENIZER,
    "val_fraction": Setting("float", minimum=0, maximum=0.5, exclusive_minimum=True,
                            help="share of documents held out for validation (default 0.05)"),
    "seed": Setting("int", minimum=0, maximum=2**32 - 1, help="seed of the split (default 0)"),
    "scrub_pii": Setting("bool", help="replace emails and phone numbers before tokenizing"),
}

SPEC = JobKindSpec(
    kind=JobKind.prepare, title="Prepare data",
    description="Clean, deduplicate, split and tokenize a text dataset (pretraining does this on its own).",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.text,),
)
