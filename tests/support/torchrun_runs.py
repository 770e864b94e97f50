"""Runs of the real command line under `torchrun` on the CPU (gloo) and what the multi-rank tests compare them by:
a small corpus, its tokenizer and token shards, `torchrun(args)`, the losses a run recorded (tests/llm/test_ddp.py,
tests/llm/test_fsdp.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from llm.cli import main

TOKENIZER = "ddp-bpe"


def write_corpus(path: Path, num_documents: int = 150) -> None:
    rng = np.random.default_rng(0)
    words = "the quick brown fox jumps over a lazy dog while small models learn to count tokens".split()
    path.write_text("\n\n".join(" ".join(rng.choice(words, rng.integers(20, 60))) for _ in range(num_documents)))


def torchrun(args: list[str], cwd, ranks: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=ranks -m llm ...` (a free port of its own), one thread per rank."""
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "llm", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def losses(run_dir: Path) -> dict[int, float]:
    return {record["step"]: record["loss"]
            for record in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def make_data_dir(tmp_path: Path) -> Path:
    """A data directory with a small trained tokenizer (a 50k-id head would be most of each step's work), and the
    corpus it was trained on in tmp_path/corpus.txt."""
    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus)
    directory = tmp_path / "data"
    assert main(["train-tokenizer", "--data", str(corpus), "--vocab-size", "300",
                 "--out", str(directory / "tokenizers" / TOKENIZER)]) == 0
    return directory


def make_prepared(data_dir: Path, tmp_path: Path) -> Path:
    """The corpus (`make_data_dir`) as token shards in tmp_path/prepared."""
    directory = tmp_path / "prepared"
    assert main(["prepare", "--data", str(tmp_path / "corpus.txt"), "--tokenizer", TOKENIZER, "--data-dir",
                 str(data_dir), "--out", str(directory), "--val-fraction", "0.1"]) == 0
    return directory


def pretrain_args(prepared: Path, out: Path, max_steps: int, grad_accum: int) -> list[str]:
    return ["pretrain", "--data", str(prepared), "--out", str(out), "--preset", "tiny", "--block-size", "32",
            "--batch-size", "2", "--grad-accum", str(grad_accum), "--max-steps", str(max_steps), "--lr", "3e-3",
            "--warmup", "2", "--log-every", "1", "--eval-every", "0", "--checkpoint-every", "0",
            "--eval-batches", "2", "--device", "cpu", "--compile", "false", "--data-dir", str(prepared.parent / "data")]
