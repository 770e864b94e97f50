"""A prepared directory the training-loop tests learn: a fixed sequence of PERIOD distinct ids out of VOCAB,
repeated (tests/llm/conftest.py's `periodic_data`; test_lr_find's longer one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

VOCAB = 512
PERIOD = 61  # a prime, so windows start at every phase of the cycle


def write_periodic_data(directory: Path, repeats: int = 60) -> Path:
    """train.bin (the sequence `repeats` times), val.bin (its first 500 ids) and stats.json in `directory`."""
    cycle = np.random.default_rng(0).permutation(VOCAB)[:PERIOD]
    stream = np.tile(cycle, repeats).astype(np.uint16)
    directory.mkdir(parents=True)
    stream.tofile(directory / "train.bin")
    stream[:500].tofile(directory / "val.bin")
    (directory / "stats.json").write_text(json.dumps({"tokenizer": "synthetic", "dtype": "uint16",
                                                      "vocab_size": VOCAB}))
    return directory
