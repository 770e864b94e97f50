"""The `train_tokenizer` kind's declaration: a byte-level BPE (rustbpe) trained on a text dataset."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from db.models import DatasetKind
from db.settings import Settings
from llm.params import settings_of
from llm.tokenizer_config import TokenizerConfig
from worker.jobs.params import JobParamsError
from worker.jobs.spec import DATASET_ID, JobKindSpec, TrainFormNames
from worker.kinds.train_tokenizer.handler import run

# A job names its tokenizer and its size (`workbench train-tokenizer` has defaults for both: the declared size, and
# the name of its output directory).
PARAMS = {
    "dataset_id": DATASET_ID,
    **{name: replace(spec, required=True, default=None) for name, spec in settings_of(TokenizerConfig).items()},
}


def check(session: Session, params: dict[str, Any], settings: Settings) -> None:
    from llm.tokenizer import BUILTIN_TOKENIZERS, TOKENIZER_NAME_RE, tokenizer_names

    name = params["name"]
    if not TOKENIZER_NAME_RE.match(name):
        raise JobParamsError("name", "use letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)")
    if name in BUILTIN_TOKENIZERS or name in tokenizer_names(settings.data_dir):
        raise JobParamsError("name", f"a tokenizer named {name!r} already exists")


SPEC = JobKindSpec(
    kind="train_tokenizer", title="Train tokenizer",
    description="Train a byte-level BPE tokenizer on a text dataset; the chat special tokens are added.",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.text,), check=check,
    form_fields=("dataset_id", "vocab_size", "name"),
    form=TrainFormNames(prefix="tok", tab="Tokenizer", tab_id="tokenizer",
                        intro="When the job has succeeded, choose the tokenizer by its name in **Pretrain**. "
                              "The job shows up in **Jobs**."),
)
