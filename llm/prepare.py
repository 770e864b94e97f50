"""Documents -> token files: the "prepare" job.

Reads a corpus through `corpus.py` (cleaning + deduplication), assigns each document to train
or val, tokenises in parallel and writes the prepared data directory of docs/architecture.md:

  train.bin   flat token ids, `<|endoftext|>` BEFORE every document (GPT-2's convention: the
              token is a separator, so a model sees "start of a new document" at each boundary)
  val.bin     the same for the validation documents
  stats.json  counts, sizes, dtype and where the data came from

Token files are raw np.uint16 arrays when the vocabulary fits (≤ 65536 ids), else np.uint32,
readable with `np.memmap(path, dtype, mode="r")`.

The split is by document and deterministic: a document goes to val when a hash of (seed, its
text) falls below `val_fraction`, so the same corpus and seed always give the same split, and
adding documents never moves the existing ones. When the dice leave a split empty, one
document is moved so that train has ≥ 1 document and val has ≥ 1 as soon as there are ≥ 2
(unless val_fraction is 0).

Everything is written to `<out_dir>.tmp` and renamed at the end: an error leaves nothing behind
and an existing `out_dir` is only replaced by a complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from llm.corpus import CleanDocument, CleaningStats, corpus_format, iter_clean_documents, no_documents_error
from llm.prepare_config import PrepareConfig
from llm.tokenizer import Tokenizer, get_tokenizer

# Documents tokenised per step: enough to keep every thread busy, small enough that memory
# stays bounded (two chunks are in flight at once: one being read, one being tokenised).
DOCUMENTS_PER_CHUNK = 1024
BYTES_PER_CHUNK = 16 << 20
# A chunk is cut into slices of this many documents per thread-pool task, so a few long
# documents don't leave the other threads idle at the end of a chunk.
DOCUMENTS_PER_TASK = 64

ProgressCallback = Callable[[int, "int | None"], None]


def token_dtype(vocab_size: int) -> type[np.unsignedinteger]:
    """The smallest unsigned type that holds every id (the dataloader reads stats.json's "dtype")."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


# ----------------------------------------------------------------------------- tokenising

def _encode_to_arrays(tokenizer: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Token ids of each text as a uint32 array, special-token strings encoded as plain text.

    tiktoken's `encode_to_numpy` hands back the Rust buffer directly, skipping the Python list of
    ints that `encode_ordinary` builds under the GIL; with no special token allowed it splits
    the text exactly as `encode_ordinary` does (tests/llm/test_prepare.py checks this).
    """
    encoding = tokenizer.encoding
    if not hasattr(encoding, "encode_to_numpy"):  # tiktoken < 0.8
        return [np.array(encoding.encode_ordinary(text), dtype=np.uint32) for text in texts]
    return [encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=()) for text in texts]


def _submit_chunk(pool: ThreadPoolExecutor, tokenizer: Tokenizer, chunk: list[CleanDocument]) -> list[Future]:
    texts = [document.text for document in chunk]
    return [pool.submit(_encode_to_arrays, tokenizer, texts[start:start + DOCUMENTS_PER_TASK])
            for start in range(0, len(texts), DOCUMENTS_PER_TASK)]


def _chunks(documents: Iterator[CleanDocument]) -> Iterator[list[CleanDocument]]:
    chunk: list[CleanDocument] = []
    chunk_bytes = 0
    for document in documents:
        chunk.append(document)
        chunk_bytes += document.num_bytes
        if len(chunk) >= DOCUMENTS_PER_CHUNK or chunk_bytes >= BYTES_PER_CHUNK:
            yield chunk
            chunk, chunk_bytes = [], 0
    if chunk:
        yield chunk


# ----------------------------------------------------------------------------- writing

@dataclass
class _HeldDocument:
    """A document kept back from its split's file in case the other split ends up empty."""

    score: float
    tokens: np.ndarray
    num_bytes: int


class _SplitWriter:
    """Appends documents (each preceded by <|endoftext|>) to one open token file and counts them."""

    def __init__(self, file, dtype: type[np.unsignedinteger], eot_id: int):
        self.file = file
        self.dtype = dtype
        self.eot = np.array([eot_id], dtype=np.uint32)
        self.documents = self.tokens = self.bytes = 0
        self.held: _HeldDocument | None = None
        self.pending: list[np.ndarray] = []

    @property
    def total_documents(self) -> int:
        return self.documents + (self.held is not None)

    def add(self, tokens: np.ndarray, num_bytes: int) -> None:
        self.pending += (self.eot, tokens)
        self.documents += 1
        self.tokens += 1 + len(tokens)
        self.bytes += num_bytes

    def flush(self) -> None:
        """Write what `add` collected as one array: one numpy call per chunk, not per token."""
        if self.pending:
            np.concatenate(self.pending).astype(self.dtype, copy=False).tofile(self.file)
            self.pending.clear()

    def counts(self) -> dict:
        return {"documents": self.documents, "tokens": self.tokens, "bytes": self.bytes}


def _val_score(digest: bytes, seed_key: bytes) -> float:
    """A number in [0, 1) fixed by the document's text and the seed."""
    mixed = hashlib.blake2b(digest, digest_size=8, key=seed_key).digest()
    return int.from_bytes(mixed, "big") / 2**64


def _assign(document: CleanDocument, tokens: np.ndarray, score: float, val_fraction: float,
            train: _SplitWriter, val: _SplitWriter) -> None:
    """Route one document; each split holds back its most borderline document (highest-scoring
    val, lowest-scoring train) so that an empty split can be given one at the end."""
    is_val = score < val_fraction
    writer = val if is_val else train
    candidate = _HeldDocument(score, tokens, document.num_bytes)
    held = writer.held
    more_borderline = held is None or (score > held.score if is_val else score < held.score)
    if more_borderline:
        writer.held, candidate = candidate, held
    if candidate is not None:
        writer.add(candidate.tokens, candidate.num_bytes)


def _finish_split(train: _SplitWriter, val: _SplitWriter, val_fraction: float) -> None:
    """Give an empty split its held-back borderline document if the rules ask for it, then write all."""
    if train.total_documents == 0 and val.held is not None:
        train.held, val.held = val.held, None
    elif val.total_documents == 0 and val_fraction > 0 and train.total_documents >= 2:
        val.held, train.held = train.held, None
    for writer in (train, val):
        if writer.held is not None:
            writer.add(writer.held.tokens, writer.held.num_bytes)
            writer.held = None
        writer.flush()


def _write_chunk(chunk: list[CleanDocument], futures: list[Future], seed_key: bytes, val_fraction: float,
                 train: _SplitWriter, val: _SplitWriter) -> int:
    """Wait for a chunk's tokens, route each document to its split, write; return the chunk's size."""
    token_arrays = [array for future in futures for array in future.result()]
    for document, tokens in zip(chunk, token_arrays):
        _assign(document, tokens, _val_score(document.digest, seed_key), val_fraction, train, val)
    train.flush()
    val.flush()
    return len(chunk)


def _replace_directory(tmp_dir: Path, out_dir: Path) -> None:
    """Put the finished `tmp_dir` at `out_dir`, removing an older `out_dir` only now."""
    if out_dir.exists():
        old_dir = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old_dir, ignore_errors=True)
        out_dir.rename(old_dir)
        tmp_dir.rename(out_dir)
        shutil.rmtree(old_dir, ignore_errors=True)
    else:
        tmp_dir.rename(out_dir)


# ----------------------------------------------------------------------------- the job

class _Stopped(Exception):
    """Raised inside `prepare` when should_stop() says yes, to unwind through the cleanup."""


def prepare(data_path: str | os.PathLike, tokenizer_name: str, out_dir: str | os.PathLike,
            val_fraction: float = PrepareConfig.val_fraction, seed: int = PrepareConfig.seed,
            data_dir: str | os.PathLike | None = None,
            on_progress: ProgressCallback | None = None, num_threads: int | None = None,
            scrub_pii: bool = PrepareConfig.scrub_pii, should_stop: Callable[[], bool] | None = None) -> dict:
    """Clean, split and tokenise the corpus at `data_path` into `out_dir`; return stats.json's content.

    `on_progress(done_documents, total)` is called after every chunk with total=None (a
    streamed corpus has no known length), and once at the end with total == done.
    `should_stop()` is asked after every chunk; when it says yes, the partial output is deleted
    (`out_dir` keeps what it had) and the result is {"stopped": True, "documents": done}. Preparing
    is deterministic, so "resuming" a stopped run means running it again.
    Raises CorpusError for a malformed corpus or one with no document left after cleaning.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    data_path, out_dir = Path(data_path), Path(out_dir)
    fmt = corpus_format(data_path)  # fail on an unknown extension before creating anything
    tokenizer = get_tokenizer(tokenizer_name, data_dir)
    dtype = token_dtype(tokenizer.vocab_size)
    num_threads = num_threads or min(8, os.cpu_count() or 1)

    tmp_dir = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)  # the remains of a crashed earlier run
    tmp_dir.mkdir(parents=True)
    try:
        cleaning = CleaningStats()
        seed_key = seed.to_bytes(16, "big", signed=True)
        done = 0
        with (open(tmp_dir / "train.bin", "wb") as train_file, open(tmp_dir / "val.bin", "wb") as val_file,
              ThreadPoolExecutor(num_threads, thread_name_prefix="prepare") as pool):
            train = _SplitWriter(train_file, dtype, tokenizer.eot_id)
            val = _SplitWriter(val_file, dtype, tokenizer.eot_id)
            # Pipelined: the pool tokenises chunk k (tiktoken releases the GIL) while this
            # thread reads and cleans chunk k+1.
            in_flight: tuple[list[CleanDocument], list[Future]] | None = None
            for chunk in _chunks(iter_clean_documents(data_path, cleaning, scrub_pii)):
                submitted = (chunk, _submit_chunk(pool, tokenizer, chunk))
                if in_flight is not None:
                    done += _write_chunk(*in_flight, seed_key, val_fraction, train, val)
                    if on_progress is not None:
                        on_progress(done, None)
                    if should_stop is not None and should_stop():
                        for future in submitted[1]:
                            future.cancel()
                        raise _Stopped
                in_flight = submitted
            if in_flight is not None:
                done += _write_chunk(*in_flight, seed_key, val_fraction, train, val)
            _finish_split(train, val, val_fraction)
        if cleaning.documents == 0:
            raise no_documents_error(data_path, cleaning)
        tokens = train.tokens + val.tokens
        stats = {
            "tokenizer": tokenizer_name, "dtype": np.dtype(dtype).name, "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id,
            "documents": cleaning.documents, "tokens": tokens, "bytes": cleaning.bytes,
            "bytes_per_token": round(cleaning.bytes / tokens, 4),
            "duplicates_removed": cleaning.duplicates_removed, "empty_removed": cleaning.empty_removed,
            "undecodable_removed": cleaning.undecodable_removed,
            "train": train.counts(), "val": val.counts(),
            "source": data_path.name, "format": fmt,
            "val_fraction": val_fraction, "seed": seed, "scrub_pii": scrub_pii,
        }
        (tmp_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    except _Stopped:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        return {"stopped": True, "documents": done}
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    _replace_directory(tmp_dir, out_dir)
    if on_progress is not None:
        on_progress(done, done)
    return stats


# ----------------------------------------------------------------------------- CLI progress

class TqdmProgress:
    """An `on_progress` callback that drives a tqdm bar; call `close()` (or use `with`) when done."""

    def __init__(self, desc: str, unit: str = "doc"):
        from tqdm import tqdm

        self.bar = tqdm(desc=desc, unit=unit, total=None, dynamic_ncols=True)

    def __call__(self, done: int, total: int | None) -> None:
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def tqdm_progress(desc: str = "prepare") -> TqdmProgress:
    """A progress bar for the CLI: `progress = tqdm_progress("prepare"); prepare(..., on_progress=progress)`."""
    return TqdmProgress(desc)
