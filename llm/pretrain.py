"""Pretraining a base model: `train` with the next-token objective over a prepared data directory.

The output directory becomes a model directory (`config.json` naming the tokenizer + `model.safetensors`,
see checkpoint.py) next to `metrics.jsonl` and the resumable `checkpoint/`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from llm.checkpoint import save_model
from llm.dataloader import BatchSampler, TokenData, iterate_eval_batches, require_tokens
from llm.evaluate import evaluate_loss, summarize
from llm.model import GPT, config_from_preset
from llm.tokenizer import get_tokenizer
from llm.train import TrainConfig, train


class NextTokenObjective:
    """Cross-entropy of every next token; evaluation gives val_loss and val_bpb on the val split."""

    def __init__(self, val_data: TokenData | None, token_bytes: np.ndarray, batch_size: int,
                 block_size: int, eval_batches: int):
        self.val_data = val_data
        self.token_bytes = token_bytes
        self.batch_size = batch_size
        self.block_size = block_size
        self.eval_batches = eval_batches
        if val_data is None:
            self.evaluate = None  # train() then skips evaluation

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        inputs, targets = batch
        _, loss = model(inputs, targets)
        return loss, {}

    def tokens_in(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return batch[0].numel()

    def evaluate(self, model: nn.Module) -> dict:
        # Always the first eval_batches windows of val.bin, so successive evaluations are comparable.
        device = next(model.parameters()).device
        windows = iterate_eval_batches(self.val_data, self.batch_size, self.block_size, self.eval_batches)
        summary = summarize(evaluate_loss(model, windows, self.token_bytes, device))
        return {key: summary[key] for key in ("val_loss", "val_bpb") if summary[key] is not None}


def pretrain(prepared_dir: str | os.PathLike, out_dir: str | os.PathLike, *, preset: str = "tiny",
             train_config: TrainConfig | None = None, model_overrides: dict | None = None,
             data_dir: str | os.PathLike | None = None,
             on_metrics: Callable[[dict], None] | None = None,
             should_stop: Callable[[], bool] | None = None,
             resume: bool = True, lr_schedule: Callable[[int], float] | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Train a GPT of shape `preset` from scratch (or from `out_dir/checkpoint/` when resuming).

    Returns {"stopped", "step", "loss", "val_loss", "val_bpb", "tokens_seen", "model_dir"};
    model_dir is None when the run was stopped before the end (its checkpoint can be resumed).
    lr_schedule: the rate of each step instead of the config's (the range test's: llm/lr_find.py).
    """
    config = train_config or TrainConfig()
    out_dir = Path(out_dir)

    # Data first: a too-short split should fail before any model is built.
    train_data = TokenData(prepared_dir, "train")
    batches = BatchSampler(train_data, config.batch_size, config.block_size, seed=config.seed)
    val_data: TokenData | None = TokenData(prepared_dir, "val")
    if len(val_data) == 0:
        log(f"{val_data.path} is empty: training without evaluation")
        val_data = None
    else:
        require_tokens(val_data, config.block_size)

    tokenizer_name = train_data.tokenizer_name
    tokenizer = get_tokenizer(tokenizer_name, data_dir=data_dir)
    data_vocab = train_data.stats.get("vocab_size", tokenizer.vocab_size)
    if data_vocab > tokenizer.vocab_size:
        raise ValueError(f"{prepared_dir} was written with a vocabulary of {data_vocab} ids but tokenizer "
                         f"{tokenizer_name!r} has {tokenizer.vocab_size}; prepare the data again")

    overrides = {"block_size": config.block_size, **(model_overrides or {})}
    model_config = config_from_preset(preset, tokenizer.vocab_size, **overrides)
    if model_config.block_size < config.block_size:
        raise ValueError(f"the model's block_size {model_config.block_size} is shorter than the training "
                         f"block_size {config.block_size}")
    torch.manual_seed(config.seed)  # the same seed gives the same initial weights
    model = GPT(model_config)

    objective = NextTokenObjective(val_data, tokenizer.token_bytes(), config.batch_size, config.block_size,
                                   config.eval_batches)
    result = train(model, objective, batches, config, out_dir, on_metrics=on_metrics, should_stop=should_stop,
                   save_model_fn=lambda m, d: save_model(m, d, tokenizer_name, extra={"preset": preset}),
                   resume=resume, lr_schedule=lr_schedule, log=log)
    return {"stopped": result["stopped"], "step": result["step"], "loss": result["loss"],
            "val_loss": result.get("val_loss"), "val_bpb": result.get("val_bpb"),
            "tokens_seen": result["tokens_seen"],
            "model_dir": None if result["stopped"] else str(out_dir)}
