"""The defaults' sweep's bookkeeping (bench/sweep_defaults.py): which rate a grid of scores gives, and its table."""

import pytest

from bench.sweep_defaults import best_rates, table


def row(kind, lr, score, rule="r", preset="tiny", method="full"):
    return {"preset": preset, "kind": kind, "method": method, "rule": rule, "lr": lr, "score": score}


def test_the_rate_is_the_middle_of_the_range_that_learns_not_its_edge():
    rows = [row("sft", lr, score) for lr, score in ((1e-4, 0.5), (1e-3, 1.0), (1e-2, 0.99), (1e-1, 0.0))]
    best = best_rates(rows)["tiny/sft/full"]
    assert best["plateau"] == [1e-3, 1e-2] and abs(best["lr"] - 10 ** -2.5) < 1e-9 and best["score"] == 1.0


def test_a_stopped_run_never_wins_and_rules_are_averaged():
    rows = [row("dpo", 1e-3, 0.4), row("dpo", 3e-3, None)]
    rows += [row("reward", 1e-4, 1.0, "a"), row("reward", 1e-4, 0.5, "b"), row("reward", 1e-3, 0.8, "a"),
             row("reward", 1e-3, 0.8, "b")]
    best = best_rates(rows)
    assert best["tiny/dpo/full"]["lr"] == pytest.approx(1e-3)
    assert best["tiny/reward/full"]["lr"] == pytest.approx(1e-3)  # mean 0.8 beats mean 0.75
    text = table(rows)
    assert "0.001: +0.40  0.003: stopped" in text and "| tiny | reward | full | b | 0.0001: 0.50  0.001: 0.80 |" in text


def test_the_reference_width_runs_check_the_rate_a_user_gets_there():
    # gpt2-124m runs each kind and method at the rate its form gives a 768-wide model with no rate given (what the
    # width rules extrapolate to, checked where they are written), all weights also a factor 3 on either side.
    from bench.sweep_defaults import WIDTH, reference_width_grid
    from llm.dpo_config import DPOConfig, dpo_train_config
    from llm.reward_config import RewardConfig, reward_train_config
    from llm.sft_config import SFTConfig, sft_train_config

    builders = {"sft": (SFTConfig, sft_train_config), "reward": (RewardConfig, reward_train_config),
                "dpo": (DPOConfig, dpo_train_config)}
    grid = reference_width_grid()
    assert set(grid) == {(kind, method) for kind in builders for method in ("full", "lora")}
    for (kind, method), rates in grid.items():
        config_class, train_config = builders[kind]
        given = train_config(config_class(method=method), WIDTH["gpt2-124m"]).lr
        expected = (given / 3, given, given * 3) if method == "full" else (given,)
        assert rates == pytest.approx(expected, rel=1e-12), (kind, method)
