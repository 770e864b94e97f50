"""The not-learning watch (llm/learning_watch.py): a flat loss warns once with the numbers and what to change, a
healthy one does not, a rising one says the rate is too large, NaN is not counted, a run still warming up is not
judged; and in the loop (llm/train.py): a run at a rate far too small leaves the warning in its log and its run
directory, a healthy run and the range test's own schedule do not; the CLI says it last, on stderr."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llm.dataloader import BatchSampler, TokenData
from llm.learning_watch import LearningWatch, WATCH_FILE, read_warning
from llm.model import GPT, config_from_preset
from llm.pretrain import NextTokenObjective
from llm.train import TrainConfig, train
from tests.support.token_streams import VOCAB



def records(losses, every=10, accuracy=None):
    """Logged records as the loop makes them: step 1, then every `every` steps."""
    steps = [1] + [every * i for i in range(1, len(losses))]
    out = [{"step": step, "loss": loss} for step, loss in zip(steps, losses)]
    if accuracy is not None:
        for record, value in zip(out, accuracy):
            record["mean_token_accuracy"] = value
    return out


def watched(losses, max_steps=200, lr=5e-5, warmup=0, **kwargs) -> tuple[LearningWatch, list[str]]:
    watch = LearningWatch(max_steps, lr, warmup)
    said = [w for w in (watch.observe(r) for r in records(losses, **kwargs)) if w]
    return watch, said


def test_a_flat_loss_warns_once_with_the_numbers_and_what_to_change():
    watch, said = watched([10.82, 10.82, 10.81, 10.81, 10.80, 10.80, 10.80, 10.79, 10.79])
    assert len(said) == 1, said  # once, at the first record at or past a quarter of the run
    assert watch.verdict["kind"] == "too_small" and watch.verdict["step"] == 50
    warning = said[0]
    assert "loss 10.82 → 10.81 after 50 of 200 steps" in warning, warning
    assert "the learning rate 5e-05 may be too small" in warning and "try 10x (0.0005)" in warning
    assert "workbench lr-find" in warning


def test_token_accuracy_is_named_when_the_records_have_it():
    _, said = watched([3.0] * 6, accuracy=[0.27] * 6)
    assert "token accuracy 0.27 → 0.27" in said[0]


def test_a_healthy_run_is_not_warned():
    # The weakest healthy run measured (bench/not_learning.py, LoRA SFT on the tiny preset): 8.8 % by a quarter.
    _, said = watched([10.8, 10.6, 10.4, 10.2, 10.0, 9.86, 9.5])
    assert said == []
    _, said = watched([6.27, 5.9, 5.4, 5.0, 4.6, 4.2, 3.0])  # pretraining at its default rate: 32 %
    assert said == []


def test_a_rising_loss_says_the_rate_is_too_large():
    watch, said = watched([3.0, 3.1, 3.4, 3.6, 3.8, 4.0])
    assert watch.verdict["kind"] == "too_large"
    assert "may be too large" in said[0] and "a tenth of it (5e-06)" in said[0]


def test_nan_is_not_counted_and_a_warming_run_is_judged_after_twice_its_warmup():
    watch, said = watched([10.0, math.nan, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0])
    assert said and watch.verdict["loss"] == pytest.approx(10.0)  # the NaN is skipped, not averaged in
    watch = LearningWatch(max_steps=200, lr=1e-3, warmup=40)
    assert watch.judge_at == 80  # a quarter would be 50: still warming up to the rate it is judged at
    assert [watch.observe(r) for r in records([10.0] * 8)] == [None] * 8  # up to step 70: not judged yet
    assert watch.observe({"step": 80, "loss": 10.0}) is not None


# ----------------------------------------------------------------------------- in the loop


def run_at(prepared, out_dir, lr, resume=True, **loop):
    config = TrainConfig(**{"max_steps": 40, "batch_size": 4, "block_size": 16, "lr": lr, "warmup": 4,
                            "eval_every": 0, "log_every": 2, "checkpoint_every": 0, "device": "cpu", **loop})
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", VOCAB, block_size=config.block_size))
    batches = BatchSampler(TokenData(prepared, "train"), config.batch_size, config.block_size, seed=1)
    objective = NextTokenObjective(None, np.ones(VOCAB, dtype=np.int64), config.batch_size, config.block_size, 1)
    lines: list[str] = []
    train(model, objective, batches, config, out_dir, log=lines.append, resume=resume)
    return lines


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_the_loop_warns_a_run_at_a_rate_far_too_small_and_not_a_healthy_one(periodic_data, tmp_path):
    lines = run_at(periodic_data, tmp_path / "small", 1e-7)
    warnings = [line for line in lines if line.startswith("WARNING: not learning")]
    assert len(warnings) == 1 and "after 10 of 40 steps" in warnings[0], lines
    assert read_warning(tmp_path / "small") == warnings[0].removeprefix("WARNING: ")

    lines = run_at(periodic_data, tmp_path / "healthy", 1e-2)
    assert not any("WARNING" in line for line in lines) and read_warning(tmp_path / "healthy") is None

    # Resumed, a run keeps its verdict (the watch reads the records it kept); started afresh, it forgets it.
    run_at(periodic_data, tmp_path / "small", 1e-7)
    assert read_warning(tmp_path / "small") == warnings[0].removeprefix("WARNING: ")
    run_at(periodic_data, tmp_path / "small", 1e-2, resume=False)
    assert not (tmp_path / "small" / WATCH_FILE).exists()


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_run_on_its_own_schedule_is_not_watched(periodic_data, tmp_path):
    config = TrainConfig(max_steps=20, batch_size=4, block_size=16, lr=1e-7, warmup=0, eval_every=0, log_every=1,
                         checkpoint_every=0, device="cpu")
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", VOCAB, block_size=config.block_size))
    batches = BatchSampler(TokenData(periodic_data, "train"), config.batch_size, config.block_size, seed=1)
    objective = NextTokenObjective(None, np.ones(VOCAB, dtype=np.int64), config.batch_size, config.block_size, 1)
    lines: list[str] = []
    train(model, objective, batches, config, tmp_path / "own", log=lines.append, lr_schedule=lambda step: 1e-9)
    assert not any("WARNING" in line for line in lines) and read_warning(tmp_path / "own") is None


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_the_cli_says_a_run_is_not_learning_last(base_dir, tmp_path, capsys):
    from llm.cli import main
    from tests.support.records import chat_lines

    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(line + "\n" for line in chat_lines()))
    assert main(["sft", "--model", str(base_dir), "--data", str(chats), "--out", str(tmp_path / "run"), "--lr", "1e-7",
                 "--max-steps", "20", "--batch-size", "4", "--block-size", "64", "--warmup", "1", "--eval-every", "0",
                 "--log-every", "1", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("WARNING: not learning: loss") and "may be too small" in last, err
