"""bench/bench_preference.py: its synthetic pairs, its figure arithmetic, and (slow) its quick path end to end."""

import pytest

from bench import bench_preference

LOOPS = ["ours:dpo", "trl:dpo", "ours:reward", "trl:reward"]


def test_pairs_are_deterministic_and_every_side_fills_the_sequence():
    from llm.preference_batches import tokenize_pairs
    from llm.tokenizer import get_tokenizer

    pairs = bench_preference.make_pairs(10, min_tokens=130)
    assert pairs == bench_preference.make_pairs(10, min_tokens=130)
    assert pairs != bench_preference.make_pairs(10, min_tokens=130, seed=1)
    assert all(pair["chosen"] != pair["rejected"] for pair in pairs)
    tokenized = tokenize_pairs(get_tokenizer("gpt2"), pairs, max_length=128)
    assert len(tokenized.examples) == 10 and tokenized.truncated == 10  # every side cut to 128 inputs: no padding
    for example in tokenized.examples:
        assert len(example.chosen[0]) == len(example.rejected[0]) == 128


def fake_result(step_s: dict[str, float], batch: int = 8) -> dict:
    runs = {name: {"wall": [s] * 3, "cpu": [2 * s] * 3, "faults": [0] * 3} for name, s in step_s.items()}
    return {"shape": "tiny", "batch": batch, "seq": 128, "runs": runs, "median_s": dict(step_s),
            "median_cpu_s": {name: 2 * s for name, s in step_s.items()},
            "pairs_per_s": {name: batch / s for name, s in step_s.items()}}


def test_ratios_compare_ours_with_trl_on_the_same_kind():
    figures = bench_preference.preference_figures(fake_result({"ours:dpo": 1.0, "trl:dpo": 4.0,
                                                               "ours:reward": 2.0, "trl:reward": 3.0}))
    assert figures["dpo_vs_trl"] == pytest.approx(4.0)            # ours DPO / TRL DPO, not vs TRL's reward
    assert figures["dpo_vs_trl_paired"] == pytest.approx(4.0)
    assert figures["dpo_vs_trl_cpu"] == pytest.approx(4.0)
    assert figures["reward_vs_trl"] == pytest.approx(1.5)
    assert figures["preference_pairs_per_s[ours:dpo]"] == pytest.approx(8.0)
    assert figures["preference_rounds[ours:dpo]"] == 3  # the rounds the median step is of
    assert figures["dpo_target"] == 1.5 and figures["reward_target"] == 1.3
    assert set(bench_preference.TARGETS) == set(bench_preference.KINDS)


def test_the_benchmark_is_registered_with_its_headline_ratios():
    from bench import run

    assert "preference" in run.BENCHMARKS
    assert {"dpo_vs_trl", "reward_vs_trl"} <= set(run.HEADLINE)


@pytest.mark.slow
def test_quick_path_on_the_tiny_shape():
    """Both sides train the same parameters on the same tokens, and all four loops run step by step."""
    pytest.importorskip("trl")
    res = bench_preference.measure("tiny", repeats=2, warmup=1, n_pairs=24, log=lambda line: None)
    for kind in bench_preference.KINDS:
        assert res["checks"][kind]["ours"] == res["checks"][kind]["trl"] > 0
    assert res["checks"]["dpo"]["data"]["identical"] == 24
    assert sorted(res["runs"]) == sorted(LOOPS)
    for name in LOOPS:
        assert len(res["runs"][name]["wall"]) == 2 and res["pairs_per_s"][name] > 0
    figures = bench_preference.preference_figures(res)
    assert figures["dpo_vs_trl"] > 0 and figures["reward_vs_trl"] > 0
