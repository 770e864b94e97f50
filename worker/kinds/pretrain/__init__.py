"""The `pretrain` kind: a base model trained from scratch on a text dataset (tokenized on first use)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import DatasetKind, JobKind, ModelKind
from db.settings import Settings
from llm.memory import MemoryEstimate, gpt_parameter_count, training_memory
from llm.params import Setting, settings_of
from llm.train_config import TrainConfig
from worker.jobs.context import JobContext, Outcome, ensure_prepared
from worker.jobs.spec import (DATASET_ID, LOSS_PLOT, MODEL_NAME, SPEED_CARDS, TOKENIZER, TRAINING_CARDS, JobKindSpec,
                               Plot)
from worker.jobs.fit import check_memory, check_schedule, check_text_dataset_fits_block, precision
from worker.jobs.params import JobParamsError, with_defaults

# Model shape overrides on top of the preset (llm.model.GPTConfig fields); the context length is the
# training block_size.
MODEL_SHAPE = {
    "n_layer": Setting("int", minimum=1, maximum=96, advanced=True, help="transformer blocks (default: the preset's)"),
    "n_head": Setting("int", minimum=1, maximum=64, advanced=True, help="attention heads (default: the preset's)"),
    "n_embd": Setting("int", minimum=8, maximum=8192, advanced=True, help="width (default: the preset's)"),
    "dropout": Setting("float", minimum=0, maximum=0.9, advanced=True, help="dropout (default: the preset's)"),
}

PARAMS = {
    "dataset_id": DATASET_ID,
    "tokenizer": TOKENIZER,
    "preset": Setting("str", default="tiny", help="model shape: tiny (CPU-sized), small, gpt2-124m"),
    "name": MODEL_NAME,
    **MODEL_SHAPE,
    # The device is left to the worker unless the job pins one.
    **with_defaults(settings_of(TrainConfig), {"device": None}),
}


def check(session: Session, params: dict[str, Any], settings: Settings) -> None:
    from llm.model import PRESETS  # imports torch; only when a pretrain job is submitted

    if params["preset"] not in PRESETS:
        raise JobParamsError("preset", f"unknown preset {params['preset']!r}; choose one of {', '.join(PRESETS)}")
    shape = {**PRESETS[params["preset"]], **{k: params[k] for k in MODEL_SHAPE if k in params}}
    if shape["n_embd"] % shape["n_head"]:
        field = "n_head" if "n_head" in params else "n_embd"
        raise JobParamsError(field, f"n_embd ({shape['n_embd']}) must be divisible by n_head ({shape['n_head']})")
    if params.get("min_lr") is not None and params["min_lr"] > params["lr"]:
        raise JobParamsError("min_lr", "must not be greater than lr")
    check_schedule(params, PARAMS)
    check_memory(memory_estimate(params, shape, settings), params, settings, declared=PARAMS,
                 model_field=next((name for name in ("n_embd", "n_layer") if name in params), "preset"),
                 model_hint="choose a smaller preset or lower n_layer / n_embd")
    check_text_dataset_fits_block(session, params, settings)


def memory_estimate(params: dict[str, Any], shape: dict[str, int], settings: Settings) -> MemoryEstimate:
    """Peak memory of the run (llm/memory.py): every parameter is trained."""
    from llm.model import padded_vocab_size
    from llm.tokenizer import get_tokenizer

    vocab = padded_vocab_size(get_tokenizer(params["tokenizer"], settings.data_dir).vocab_size)
    total = gpt_parameter_count(shape["n_layer"], shape["n_embd"], vocab, params["block_size"])
    return training_memory(total_params=total, trainable_params=total, n_layer=shape["n_layer"],
                           n_embd=shape["n_embd"], vocab_size=vocab, batch_size=params["batch_size"],
                           length=params["block_size"], **precision(params, settings))


def run(ctx: JobContext) -> Outcome:
    from llm.pretrain import pretrain
    from worker.jobs.training import run_training

    params = ctx.params
    prepared = ensure_prepared(ctx, params["tokenizer"])
    if prepared is None:
        return Outcome(stopped=True, summary="stopped while preparing the data")
    overrides = {name: params[name] for name in MODEL_SHAPE if name in params}

    def train(train_config):
        return pretrain(prepared, ctx.run_dir, preset=params["preset"], train_config=train_config,
                        model_overrides=overrides or None, data_dir=ctx.data_dir, on_metrics=ctx.on_metrics,
                        should_stop=ctx.should_stop, resume=True, log=ctx.log)

    return run_training(ctx, train, produces=ModelKind.base)


SPEC = JobKindSpec(
    kind=JobKind.pretrain, title="Pretrain",
    description="Pretrain a base model on a text dataset; the data is tokenized the first time a "
                "dataset/tokenizer pair is used.",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.text,), produces=ModelKind.base, check=check,
    metric_cards=TRAINING_CARDS + (("val_bpb", "val bits/byte"), ("mfu", "MFU")) + SPEED_CARDS,
    plots=(LOSS_PLOT, Plot("Validation bits per byte", {"val_bpb": "val bits/byte"})),
    form_fields=("dataset_id", "tokenizer", "preset", "max_steps", "batch_size", "block_size", "lr", "warmup",
                 "eval_every", "checkpoint_every", "seed", "name"),
)
