"""Validation loss, perplexity and bits per byte of a model on a prepared split.

Loss per token depends on the tokenizer (a bigger vocabulary packs more text into each token), so
models with different tokenizers are compared by bits per byte instead (nanochat's `evaluate_bpb`):
the summed cross-entropy of the text divided by ln 2 times the UTF-8 bytes that text takes.
Each target token contributes its own bytes (`tokenizer.token_bytes()[target]`); special tokens
such as <|endoftext|> are 0 bytes and are left out of the bpb numerator too, since they are not text.

`val_loss` (and perplexity = exp(val_loss)) is the mean over ALL targets, specials included, so it
is the same quantity as the training loss and the two curves can be laid over each other.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from llm.dataloader import TokenData, iterate_eval_batches
from llm.device import autocast_context, pick_device

IGNORE_INDEX = -100  # targets with this id (prompt tokens in SFT, padding) carry no loss


def bits_per_byte(total_nats: float, total_bytes: float) -> float:
    """Convert summed cross-entropy in nats over some text into bits per UTF-8 byte of that text."""
    if total_bytes <= 0:
        raise ValueError("bits per byte needs at least one byte of text among the targets")
    return total_nats / (math.log(2) * total_bytes)


@torch.no_grad()
def evaluate_loss(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  token_bytes: np.ndarray | torch.Tensor, device: torch.device | str) -> dict:
    """Sum the per-token cross-entropy over (x, y) batches.

    Returns {"nats", "tokens"}: summed loss and count over every target (for val_loss), and
    {"bpb_nats", "bytes"}: summed loss and UTF-8 bytes over text targets only (for bits per byte).
    The caller chooses model.eval() and autocast.
    """
    device = torch.device(device)
    bytes_of = torch.as_tensor(np.asarray(token_bytes), dtype=torch.int64, device=device)
    # Accumulate on the device and read back once: a .item() per batch would stall a GPU each time.
    nats = torch.zeros((), dtype=torch.float64, device=device)
    bpb_nats = torch.zeros((), dtype=torch.float64, device=device)
    tokens = torch.zeros((), dtype=torch.int64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in batches:
        x, y = x.to(device), y.to(device).reshape(-1)
        output = model(x)
        logits = output[0] if isinstance(output, tuple) else output
        per_token = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y,
                                    ignore_index=IGNORE_INDEX, reduction="none")
        scored = y != IGNORE_INDEX
        target_bytes = bytes_of[y.clamp(min=0)] * scored
        is_text = target_bytes > 0
        nats += per_token[scored].sum(dtype=torch.float64)
        tokens += scored.sum()
        bpb_nats += per_token[is_text].sum(dtype=torch.float64)
        total_bytes += target_bytes.sum()
    return {"nats": nats.item(), "tokens": int(tokens.item()),
            "bpb_nats": bpb_nats.item(), "bytes": int(total_bytes.item())}


def summarize(totals: dict) -> dict:
    """Turn evaluate_loss sums into val_loss, perplexity and val_bpb (None when there was no text)."""
    if totals["tokens"] == 0:
        raise ValueError("no target tokens were evaluated")
    val_loss = totals["nats"] / totals["tokens"]
    val_bpb = bits_per_byte(totals["bpb_nats"], totals["bytes"]) if totals["bytes"] else None
    return {"val_loss": val_loss, "perplexity": math.exp(val_loss), "val_bpb": val_bpb,
            "tokens": totals["tokens"], "bytes": totals["bytes"]}


def evaluate(model_or_dir: nn.Module | str | os.PathLike, prepared_dir: str | os.PathLike, *,
             split: str = "val", batch_size: int = 8, block_size: int | None = None,
             max_batches: int | None = None, tokenizer=None, device: str = "auto", dtype: str = "auto",
             data_dir: str | os.PathLike | None = None) -> dict:
    """Evaluate a model directory (or a model object) on a prepared split.

    Returns {"val_loss", "perplexity", "val_bpb", "tokens", "bytes"}. `block_size` defaults to the
    model's context, shortened to fit a split smaller than one block.
    """
    from llm.checkpoint import load_model
    from llm.tokenizer import get_tokenizer

    device = pick_device(device)
    data = TokenData(prepared_dir, split)
    if isinstance(model_or_dir, (str, os.PathLike)):
        model, tokenizer = load_model(Path(model_or_dir), device, data_dir=data_dir)
    else:
        model = model_or_dir.to(device)
        tokenizer = tokenizer or get_tokenizer(data.tokenizer_name, data_dir=data_dir)
    if tokenizer.name not in (data.tokenizer_name, Path(data.tokenizer_name).name):
        raise ValueError(f"the model uses tokenizer {tokenizer.name!r} but {data.directory} was "
                         f"prepared with {data.tokenizer_name!r}; prepare the data with the model's tokenizer")
    if block_size is None:
        block_size = min(model.config.block_size, max(len(data) - 1, 1))
    was_training = model.training
    model.eval()
    try:
        with autocast_context(device, dtype):
            totals = evaluate_loss(model, iterate_eval_batches(data, batch_size, block_size, max_batches),
                                   tokenizer.token_bytes(), device)
    finally:
        model.train(was_training)
    return summarize(totals)
