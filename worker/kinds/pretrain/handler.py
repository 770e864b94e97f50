"""The `pretrain` kind's handler: train a tokenizer that fits the model first when the job asks for one, tokenize
the dataset on first use, then train a base model (`llm.pretrain`)."""

from __future__ import annotations

from db.models import ModelKind
from db.settings import safe_join
from llm.pretrain_config import SHAPE_FIELDS
from worker.jobs.context import JobContext, Outcome, dataset_path, ensure_prepared, file_lock
from worker.jobs.training import run_training


def trained_tokenizer_name(dataset_id: int, vocab_size: int) -> str:
    """The tokenizer a job's first stage trains: one per dataset and size, so later runs reuse it."""
    return f"dataset{dataset_id}-bpe{vocab_size}"


def ensure_tokenizer(ctx: JobContext, name: str, vocab_size: int) -> bool:
    """Train the BPE `name` of `vocab_size` tokens on the job's dataset unless it exists (another job may be
    training it: the lock makes this one wait and reuse it); False when stopped meanwhile (nothing written)."""
    from llm.corpus import iter_documents
    from llm.tokenizer import train_tokenizer

    out_dir = safe_join(ctx.data_dir, "tokenizers", name)
    with file_lock(out_dir.with_name(out_dir.name + ".lock")):
        if (out_dir / "tokenizer.json").is_file():
            ctx.log(f"using tokenizer {name!r}, trained on dataset {ctx.dataset.id} before")
            return True
        ctx.log(f"first stage: training tokenizer {name!r} ({vocab_size:,} tokens) on dataset {ctx.dataset.id}")
        trained = train_tokenizer(iter_documents(dataset_path(ctx)), vocab_size, out_dir, name,
                                  on_progress=ctx.on_progress, should_stop=ctx.should_stop)
    return trained is not None


def run(ctx: JobContext) -> Outcome:
    from llm.pretrain import pretrain

    params = ctx.params
    if params.get("new_tokenizer_vocab") and not ensure_tokenizer(ctx, params["tokenizer"],
                                                                  params["new_tokenizer_vocab"]):
        return Outcome(stopped=True, summary="stopped while training the tokenizer; nothing was written")
    prepared = ensure_prepared(ctx, params["tokenizer"])
    if prepared is None:
        return Outcome(stopped=True, summary="stopped while preparing the data")
    overrides = {name: params[name] for name in SHAPE_FIELDS if name in params}

    def train(train_config):
        return pretrain(prepared, ctx.run_dir, preset=params["preset"], train_config=train_config,
                        model_overrides=overrides or None, data_dir=ctx.data_dir, on_metrics=ctx.on_metrics,
                        should_stop=ctx.should_stop, resume=True, log=ctx.log)

    return run_training(ctx, train, produces=ModelKind.base)
