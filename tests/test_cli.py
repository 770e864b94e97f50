"""The `workbench` command line end to end: train-tokenizer → prepare → pretrain (+ resume) → eval → generate."""

import json
import random
import subprocess
import sys

import pytest

from llm.cli import main


def write_corpus(path, num_documents=120, seed=0):
    rng = random.Random(seed)
    words = "the quick brown fox jumps over a lazy dog while small models learn to count tokens".split()
    documents = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) for _ in range(num_documents)]
    path.write_text("\n\n".join(documents) + "\n")
    return documents


def test_every_command_has_help():
    result = subprocess.run([sys.executable, "-m", "llm", "--help"], capture_output=True, text=True, check=True)
    commands = ["tokenizers", "train-tokenizer", "prepare", "pretrain", "eval", "generate",
                "import-gpt2", "export-hf", "bench"]
    for command in commands:
        assert command in result.stdout
        sub = subprocess.run([sys.executable, "-m", "llm", command, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "usage:" in sub.stdout


def test_malformed_corpus_gives_one_clear_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n')
    code = main(["prepare", "--data", str(bad), "--tokenizer", "gpt2", "--out", str(tmp_path / "out")])
    assert code == 2
    error = capsys.readouterr().err
    assert "bad.jsonl" in error and "line 2" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_full_cli_flow(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus)
    data_dir = tmp_path / "data"

    assert main(["train-tokenizer", "--data", str(corpus), "--vocab-size", "400",
                 "--out", str(data_dir / "tokenizers" / "cli-bpe")]) == 0
    assert main(["tokenizers", "--data-dir", str(data_dir)]) == 0
    assert "cli-bpe" in capsys.readouterr().out

    prepared = tmp_path / "prepared"
    assert main(["prepare", "--data", str(corpus), "--tokenizer", "cli-bpe", "--data-dir", str(data_dir),
                 "--out", str(prepared), "--val-fraction", "0.1"]) == 0
    stats = json.loads((prepared / "stats.json").read_text())
    assert stats["tokenizer"] == "cli-bpe" and stats["documents"] > 100

    run = tmp_path / "run"
    common = ["pretrain", "--data", str(prepared), "--out", str(run), "--preset", "tiny", "--block-size", "32",
              "--batch-size", "4", "--eval-every", "10", "--checkpoint-every", "10", "--log-every", "5",
              "--data-dir", str(data_dir)]
    assert main(common + ["--max-steps", "20"]) == 0
    # the same run directory again without --resume is refused rather than silently overwritten
    assert main(common + ["--max-steps", "30"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(common + ["--max-steps", "30", "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and max(steps) == 30

    capsys.readouterr()
    assert main(["eval", "--model", str(run), "--data", str(prepared), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "val_loss" in out and "perplexity" in out and "val_bpb" in out

    generate = ["generate", "--model", str(run), "--prompt", "the quick", "--max-new-tokens", "12",
                "--seed", "7", "--data-dir", str(data_dir)]
    assert main(generate) == 0
    first = capsys.readouterr().out
    assert main(generate) == 0
    assert capsys.readouterr().out == first  # same seed, same text
    assert first.startswith("the quick") and len(first.strip()) > len("the quick")
