"""Arena ratings (llm/ratings.py): Bradley–Terry on the Elo scale against values worked out by hand, recovery of
known strengths from simulated votes, and bootstrap intervals that contain them."""

import math
import random

import pytest

from llm.ratings import bradley_terry, leaderboard, win_probability


def test_two_models_by_hand():
    votes = [("sft", "dpo", "b")] * 64 + [("sft", "dpo", "a")] * 36
    ratings = bradley_terry(votes)
    # Two models: p_dpo / p_sft = their wins ratio, the prior adding a quarter win to each: 64.25 / 36.25.
    gap = 400 * math.log10(64.25 / 36.25)
    assert ratings["dpo"] - ratings["sft"] == pytest.approx(gap, abs=1e-6)
    assert (ratings["dpo"] + ratings["sft"]) / 2 == pytest.approx(1000)
    assert win_probability(ratings["dpo"], ratings["sft"]) == pytest.approx(64.25 / 100.5, abs=1e-6)


def test_ties_and_both_bad_are_half_a_win_each():
    ratings = bradley_terry([("x", "y", "tie"), ("x", "y", "both_bad"), ("x", "y", "a"), ("x", "y", "b")])
    assert ratings["x"] == pytest.approx(ratings["y"])
    with pytest.raises(ValueError, match="outcome"):
        bradley_terry([("x", "y", "left")])


def test_known_strengths_are_recovered_with_intervals_around_them():
    true = {"big": 1150.0, "mid": 1000.0, "small": 850.0}
    rng = random.Random(0)
    votes = []
    for _ in range(1500):
        a, b = rng.sample(sorted(true), 2)
        votes.append((a, b, "a" if rng.random() < win_probability(true[a], true[b]) else "b"))
    board = leaderboard(votes, rounds=100, seed=1)
    assert [row["model"] for row in board] == ["big", "mid", "small"]
    for row in board:
        assert abs(row["rating"] - true[row["model"]]) < 30, row
        assert row["lower"] <= row["rating"] <= row["upper"] and row["upper"] - row["lower"] < 80
        assert row["lower"] - 10 <= true[row["model"]] <= row["upper"] + 10
    assert sum(row["votes"] for row in board) == 2 * len(votes)


def test_a_model_that_always_wins_stays_finite():
    ratings = bradley_terry([("a", "b", "a")] * 10)
    assert math.isfinite(ratings["a"]) and ratings["a"] > ratings["b"]
    assert leaderboard([]) == []
