"""The benchmark's figure arithmetic (bench/bench_train.py): which measured variants each ratio compares."""

from bench.bench_train import _shape_figures

SPECS = ["ours:fp32", "ours:bf16", "hf-sdpa:fp32", "hf-eager:fp32", "hf-sdpa:bf16"]


def fake_result(tokens_per_s: dict[str, float]) -> dict:
    runs = {spec: {"wall": [1024 / tps] * 3, "cpu": [2048 / tps] * 3, "faults": [0] * 3}
            for spec, tps in tokens_per_s.items()}
    return {"tokens_per_s": tokens_per_s, "runs": runs, "flops_per_token": 1e9,
            "median_s": {spec: 1024 / tps for spec, tps in tokens_per_s.items()},
            "median_cpu_s": {spec: 2048 / tps for spec, tps in tokens_per_s.items()},
            "matmul_fp32_flops": 200e9, "matmul_bf16_flops": 400e9}


def test_headline_compares_equal_precision_and_best_vs_best_is_reported_beside_it():
    tps = {"ours:fp32": 150.0, "ours:bf16": 300.0, "hf-sdpa:fp32": 100.0, "hf-eager:fp32": 80.0,
           "hf-sdpa:bf16": 250.0}
    figures = _shape_figures(fake_result(tps), SPECS, "")
    assert figures["train_vs_hf"] == 1.5                   # ours fp32 / HF's faster fp32 attention
    assert figures["train_vs_hf_paired"] == 1.5
    assert figures["train_vs_hf_cpu"] == 1.5
    assert figures["train_vs_hf_bf16"] == 300 / 250
    assert figures["train_vs_hf_best"] == 300 / 250        # both sides' fastest: bf16 here
    assert figures["train_vs_hf_default"] == 300 / 100
    assert figures["train_hf_attn"] == "sdpa"
    # FLOP/s of training over a matmul of the same precision.
    assert figures["train_flops_vs_matmul_peak"] == 1e9 * 150 / 200e9
    assert figures["train_flops_vs_bf16_matmul_peak"] == 1e9 * 300 / 400e9


def test_suffix_and_hf_eager_winning_float32():
    tps = {"ours:fp32": 120.0, "ours:bf16": 90.0, "hf-sdpa:fp32": 60.0, "hf-eager:fp32": 80.0,
           "hf-sdpa:bf16": 70.0}
    figures = _shape_figures(fake_result(tps), SPECS, "_tiny")
    assert figures["train_vs_hf_tiny"] == 120 / 80
    assert figures["train_hf_attn_tiny"] == "eager"
    assert figures["train_ours_best_tiny"] == "ours:fp32" and figures["train_hf_best_tiny"] == "hf-eager:fp32"
    assert figures["train_vs_hf_best_tiny"] == 120 / 80
