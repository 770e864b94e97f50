"""Batches of token ids from a prepared data directory (`train.bin`, `val.bin`, `stats.json`).

Training batches come from random offsets drawn by the sampler's own `torch.Generator`, so the data
position is part of the resumable state: `state_dict()` captures the generator, and a resumed run
draws exactly the batches the uninterrupted run would have drawn. Evaluation batches are contiguous,
non-overlapping windows from the start of the split, so every evaluation sees the same tokens.

The token files are memory-mapped: a corpus larger than RAM costs nothing until a window is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

SPLITS = ("train", "val")


class TokenData:
    """One split of a prepared directory: `tokens` (a read-only memmap) and the directory's `stats`."""

    def __init__(self, prepared_dir: str | os.PathLike, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        self.directory = Path(prepared_dir)
        self.split = split
        stats_path = self.directory / "stats.json"
        if not stats_path.is_file():
            raise FileNotFoundError(f"{self.directory} is not a prepared data directory: stats.json is missing")
        self.stats: dict = json.loads(stats_path.read_text())
        self.path = self.directory / f"{split}.bin"
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} is missing: prepare the data again")
        self.dtype = np.dtype(self.stats.get("dtype", "uint16"))
        size = self.path.stat().st_size
        if size % self.dtype.itemsize:
            raise ValueError(f"{self.path} is {size} bytes, not a whole number of {self.dtype} tokens: "
                             f"the file is truncated or stats.json names the wrong dtype")
        # np.memmap refuses empty files; an empty split is an empty array (and fails the length check).
        self.tokens = np.memmap(self.path, dtype=self.dtype, mode="r") if size else np.zeros(0, self.dtype)

    @property
    def tokenizer_name(self) -> str:
        return self.stats["tokenizer"]

    def __len__(self) -> int:
        return len(self.tokens)


def require_tokens(data: TokenData, block_size: int) -> None:
    """A window needs block_size inputs plus one more token for the last target."""
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if len(data) < block_size + 1:
        hint = (f"use a smaller --block-size (at most {len(data) - 1})" if len(data) >= 2
                else "add more documents to this split")
        raise ValueError(f"{data.path} holds only {len(data)} tokens, but a block of {block_size} tokens "
                         f"needs at least {block_size + 1} (inputs plus next-token targets); {hint}")


class BatchSampler:
    """Random (x, y) windows: int64 tensors of shape (batch_size, block_size), y is x shifted by one."""

    def __init__(self, data: TokenData, batch_size: int, block_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        require_tokens(data, block_size)
        self.data = data
        self.batch_size = batch_size
        self.block_size = block_size
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)  # its own: model code never advances it
        self.batches_served = 0

    def _next_starts(self) -> torch.Tensor:
        # Highest start is len - T - 1, so the window's last target (start + T) is still in the file.
        starts = torch.randint(0, len(self.data) - self.block_size, (self.batch_size,), generator=self.generator)
        self.batches_served += 1
        return starts

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.block_size
        starts = self._next_starts()
        rows = np.stack([self.data.tokens[start:start + T + 1] for start in starts.tolist()])
        rows = torch.from_numpy(rows.astype(np.int64))
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def skip_batch(self) -> None:
        """Move past one batch without reading it: another rank trains on it (llm/distributed.py)."""
        self._next_starts()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        """Everything needed to continue the same stream of batches (tensors and ints only)."""
        return {"seed": self.seed, "generator": self.generator.get_state(),
                "batches_served": self.batches_served,
                "batch_size": self.batch_size, "block_size": self.block_size}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.batches_served = int(state["batches_served"])


def iterate_eval_batches(data: TokenData, batch_size: int, block_size: int,
                         max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Contiguous non-overlapping windows from the start of the split, in order, batch_size at a time.

    Window i predicts tokens i*T+1 .. i*T+T, so the windows together cover every target once (except a
    tail shorter than one window). The last batch may be smaller. `max_batches` caps the work.
    """
    require_tokens(data, block_size)
    T = block_size
    windows = (len(data) - 1) // T
    if max_batches is not None:
        windows = min(windows, max_batches * batch_size)
    for first in range(0, windows, batch_size):
        count = min(batch_size, windows - first)
        chunk = np.asarray(data.tokens[first * T:(first + count) * T + 1]).astype(np.int64)
        x = torch.from_numpy(chunk[:-1].reshape(count, T))
        y = torch.from_numpy(chunk[1:].reshape(count, T))
        yield x, y
