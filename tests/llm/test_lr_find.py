"""The learning-rate range test (llm/lr_find.py, `workbench lr-find`): the exponential rates, the analysis (centred
smoothing, the suggestion, the stop on divergence), a real test on a tiny model whose curve has the expected shape
(flat, falling, blowing up) and whose suggestion is sane, and the CLI on SFT (table, curve, PNG, suggestion) and on
a reward model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from llm.dataloader import BatchSampler, TokenData
from llm.lr_find import (RESULT_FILE, SCRATCH_DIR, Divergence, LRFindConfig, ascii_plot, exponential_rates,
                         range_test, save_plot, smooth, suggest)
from llm.model import GPT, config_from_preset
from llm.pretrain import NextTokenObjective
from llm.train import TrainConfig, train
from tests.support.token_streams import VOCAB, write_periodic_data



def test_the_rates_rise_exponentially_from_start_to_end():
    rate = exponential_rates(LRFindConfig(start_lr=1e-7, end_lr=1.0, steps=100))
    assert rate(1) == pytest.approx(1e-7) and rate(100) == pytest.approx(1.0)
    ratios = {round(rate(step + 1) / rate(step), 9) for step in range(1, 100)}
    assert len(ratios) == 1 and ratios.pop() == pytest.approx(10 ** (7 / 99))
    with pytest.raises(ValueError, match="end_lr must be above start_lr"):
        LRFindConfig(start_lr=1e-2, end_lr=1e-3)


def synthetic_curve(steps=100):
    """Flat at 5 up to 1e-4, falling to 1 at 1e-2, then blowing up: a range test's shape."""
    rates = [1e-7 * 10 ** (7 * i / (steps - 1)) for i in range(steps)]
    losses = []
    for lr in rates:
        x = math.log10(lr)
        losses.append(5.0 if x < -4 else 5.0 - 2 * (x + 4) if x < -2 else 1.0 + 20 * (x + 2) ** 2)
    return rates, losses


def test_the_suggestion_is_a_tenth_of_the_minimum_and_the_steepest_point_is_in_the_descent():
    rates, losses = synthetic_curve()
    found = suggest(rates, smooth(losses, 7))
    assert -2.2 < math.log10(found["minimum_lr"]) < -1.8
    assert found["suggested_lr"] == pytest.approx(found["minimum_lr"] / 10)
    assert -4 <= math.log10(found["steepest_lr"]) <= -2
    assert suggest(rates[:2], losses[:2])["suggested_lr"] is None  # too few points to say anything


def test_centred_smoothing_does_not_lag():
    line = [float(i) for i in range(20)]
    assert smooth(line, 5)[2:-2] == line[2:-2]  # a straight line is its own centred average
    noisy = [1.0 + (0.1 if i % 2 else -0.1) for i in range(20)]
    assert max(abs(v - 1.0) for v in smooth(noisy, 5)[2:-2]) < 0.03


def test_the_test_stops_when_the_smoothed_loss_passes_four_times_its_best_or_is_not_finite():
    watch = Divergence(LRFindConfig(smoothing=0.0))
    for step, loss in enumerate([5.0, 3.0, 1.0, 2.0, 3.9], start=1):
        watch.observe({"step": step, "lr": 1e-3 * step, "loss": loss})
    assert not watch.diverged
    watch.observe({"step": 6, "lr": 6e-3, "loss": 4.1})
    assert watch.diverged and "passed 4x its best (1.000) at step 6" in watch.reason
    watch = Divergence(LRFindConfig())
    watch.observe({"step": 1, "lr": 1e-3, "loss": math.nan})
    assert watch.diverged and watch.points == []


# ----------------------------------------------------------------------------- a real range test

@pytest.fixture
def periodic_data(tmp_path):
    """The loop tests' periodic stream (tests/support/token_streams.py), long enough for a 100-step range test."""
    return write_periodic_data(tmp_path / "prepared", repeats=200)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_range_test_on_a_tiny_model_is_flat_then_falls_then_blows_up_and_suggests_a_sane_rate(periodic_data,
                                                                                               tmp_path):
    def pretrain_periodic(train_config, out_dir, **loop):
        torch.manual_seed(0)
        model = GPT(config_from_preset("tiny", VOCAB, block_size=train_config.block_size))
        batches = BatchSampler(TokenData(periodic_data, "train"), train_config.batch_size, train_config.block_size,
                               seed=1)
        objective = NextTokenObjective(None, np.ones(VOCAB, dtype=np.int64), train_config.batch_size,
                                       train_config.block_size, 1)
        return train(model, objective, batches, train_config, out_dir, **loop)

    lines: list[str] = []
    document = range_test(pretrain_periodic, LRFindConfig(), TrainConfig(batch_size=8, block_size=32, device="cpu"),
                          tmp_path / "out", log=lines.append)
    smoothed = [p["smoothed"] for p in document["points"]]
    start, best = smoothed[0], min(smoothed)
    # Flat while the rate is too small to move anything (the first 2 decades: 1e-7 to 1e-5) ...
    flat = [p["smoothed"] for p in document["points"] if p["lr"] < 1e-5]
    assert max(abs(v - start) / start for v in flat) < 0.02, flat
    # ... then falling far, then blowing up: the test stops on the divergence, before the last rate.
    assert best < 0.5 * start
    assert document["stopped"].startswith(("the smoothed loss", "the loss became")), document["stopped"]
    assert len(document["points"]) < 100 and smoothed[-1] > 2 * best
    # The pretraining default of this product is 1e-3 and the measured runs learn from 1e-4 to 3e-2 (bench/README).
    assert 1e-4 <= document["suggested_lr"] <= 3e-2, document["suggested_lr"]
    assert document["steepest_lr"] < document["minimum_lr"]
    assert not any("WARNING" in line for line in lines)  # the range test is not watched for learning
    assert json.loads((tmp_path / "out" / RESULT_FILE).read_text())["suggested_lr"] == document["suggested_lr"]
    assert not (tmp_path / "out" / SCRATCH_DIR).exists()  # nothing of the run is kept but its curve
    assert "|" in ascii_plot(document) and "*" in ascii_plot(document)
    assert save_plot(document, tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_the_cli_range_test_of_sft_prints_the_curve_and_a_suggestion(base_dir, tmp_path, capsys):
    from llm.cli import main
    from tests.support.records import chat_lines

    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(line + "\n" for line in chat_lines(200)))
    out = tmp_path / "lr"
    assert main(["lr-find", "sft", "--model", str(base_dir), "--data", str(chats), "--out", str(out),
                 "--steps", "40", "--batch-size", "4", "--block-size", "64", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "learning rate" in printed and "smoothed" in printed  # the table
    assert "learning rate (log scale); * smoothed loss, | suggested" in printed  # the curve in characters
    document = json.loads((out / RESULT_FILE).read_text())
    assert document["what"] == "SFT" and len(document["points"]) >= 20
    assert f"--lr {document['suggested_lr']:.2g}" in printed and "suggested learning rate" in printed
    assert (out / "lr_find.png").is_file()


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_the_cli_range_test_of_a_reward_model_suggests_a_rate(base_dir, tmp_path, capsys):
    from llm.cli import main
    from tests.support.records import preference_lines

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(line + "\n" for line in preference_lines(120)))
    out = tmp_path / "lr-rm"
    assert main(["lr-find", "reward", "--model", str(base_dir), "--data", str(pairs), "--out", str(out),
                 "--steps", "30", "--batch-size", "4", "--block-size", "64", "--device", "cpu"]) == 0
    document = json.loads((out / RESULT_FILE).read_text())
    assert document["what"] == "a reward model" and document["points"][0]["loss"] == pytest.approx(0.69, abs=0.15)
    assert document["suggested_lr"] is not None and "suggested learning rate" in capsys.readouterr().out
