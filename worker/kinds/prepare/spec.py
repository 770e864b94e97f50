"""The `prepare` kind's declaration: clean, deduplicate, split and tokenize a text dataset into token files."""

from __future__ import annotations

from db.models import DatasetKind
from llm.params import settings_of
from llm.prepare_config import PrepareConfig
from worker.jobs.spec import DATASET_ID, TOKENIZER, JobKindSpec
from worker.kinds.prepare.handler import run

PARAMS = {
    "dataset_id": DATASET_ID,
    "tokenizer": TOKENIZER,
    **settings_of(PrepareConfig),  # how the corpus is split and cleaned, as `workbench prepare` takes it
}

SPEC = JobKindSpec(
    kind="prepare", title="Prepare data",
    description="Clean, deduplicate, split and tokenize a text dataset (pretraining does this on its own).",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.text,),
)
