"""`TokenizerConfig`: a BPE tokenizer to train (`llm.tokenizer.train_tokenizer`), declared once here
(`llm.params.setting`) for the worker's `train_tokenizer` kind, its Train form and `workbench train-tokenizer`.
Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from llm.params import setting


@dataclass
class TokenizerConfig:
    vocab_size: int = setting(8192, minimum=257, maximum=262_144,
                              help="256 byte tokens + merges (the chat special tokens come on top)")
    name: str | None = setting(None, type="str", max_length=64, help="letters, digits, '.', '_', '-'")
