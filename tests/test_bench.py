"""The benchmarks' figure arithmetic (bench/bench_train.py, bench/bench_sft.py): which measured variants each
ratio compares; and bench_sft's data, tokenizer and (slow) quick path."""

import pytest

from bench import bench_sft
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


# ----------------------------------------------------------------------------- bench_sft

SFT_LOOPS = ["ours:lora", "trl:lora", "ours:full", "trl:full"]


def fake_sft_result(step_s: dict[str, float], tokens_per_step: int = 1024) -> dict:
    runs = {name: {"wall": [s] * 3, "cpu": [2 * s] * 3, "faults": [0] * 3} for name, s in step_s.items()}
    return {"shape": "tiny", "batch": 8, "seq": 128, "tokens_per_step": tokens_per_step, "runs": runs,
            "median_s": dict(step_s), "median_cpu_s": {name: 2 * s for name, s in step_s.items()},
            "tokens_per_s": {name: tokens_per_step / s for name, s in step_s.items()}}


def test_sft_ratios_compare_ours_with_trl_in_the_same_mode():
    figures = bench_sft.sft_figures(fake_sft_result({"ours:lora": 1.0, "trl:lora": 3.0,
                                                     "ours:full": 2.0, "trl:full": 3.0}))
    assert figures["sft_lora_vs_trl"] == pytest.approx(3.0)        # ours LoRA / TRL + peft LoRA
    assert figures["sft_lora_vs_trl_paired"] == pytest.approx(3.0)
    assert figures["sft_lora_vs_trl_cpu"] == pytest.approx(3.0)
    assert figures["sft_full_vs_trl"] == pytest.approx(1.5)        # ours full / TRL full, not vs TRL's LoRA
    assert figures["sft_tokens_per_s[ours:lora]"] == pytest.approx(1024.0)
    assert figures["sft_lora_target"] == 1.5 and figures["sft_full_target"] == 1.3
    assert set(bench_sft.TARGETS) == set(bench_sft.MODES)


def test_sft_conversations_are_deterministic_and_fill_the_sequence():
    from llm.chat import render_conversation
    from llm.tokenizer import get_tokenizer

    first = bench_sft.make_conversations(12, min_tokens=130)
    assert first == bench_sft.make_conversations(12, min_tokens=130)
    assert first != bench_sft.make_conversations(12, min_tokens=130, seed=1)
    tokenizer = get_tokenizer("gpt2")
    for messages in first:
        ids, mask = render_conversation(tokenizer, messages)
        assert len(ids) >= 130 and any(mask[:129])  # every one fills 128 + 1 tokens and keeps an answer


def test_sft_trl_tokenizer_renders_our_chat_template():
    """TRL's side tokenizes with a Hugging Face tokenizer built offline: the same ids and the same assistant
    mask as llm/chat.py, so both sides train on the same tokens."""
    pytest.importorskip("transformers")
    from llm.chat import render_conversation
    from llm.tokenizer import get_tokenizer

    tokenizer = bench_sft.hf_tokenizer()
    ours = get_tokenizer("gpt2")
    for messages in bench_sft.make_conversations(8, min_tokens=40, seed=3):
        ids, mask = render_conversation(ours, messages)
        rendered = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                 return_assistant_tokens_mask=True)
        assert list(rendered["input_ids"]) == ids
        assert list(rendered["assistant_masks"]) == mask


@pytest.mark.slow
def test_sft_benchmark_quick_path_on_the_tiny_shape():
    """The benchmark end to end on the tiny shape: both sides' losses agree, the data is identical, and all
    four training loops (ours and TRL, LoRA and full) run step by step and yield figures."""
    pytest.importorskip("trl")
    res = bench_sft.measure("tiny", repeats=2, warmup=1, n_conversations=24, log=lambda line: None)
    for mode in bench_sft.MODES:
        check = res["checks"][mode]
        assert check["ok"], check
        assert check["abs_diff"] <= 1e-4 and check["abs_diff_after_step"] <= 1e-4
        assert check["trainable_ours"] == check["trainable_trl"]
    assert res["checks"]["lora"]["data"]["identical"] == 24
    assert sorted(res["runs"]) == sorted(SFT_LOOPS)
    for name in SFT_LOOPS:
        assert len(res["runs"][name]["wall"]) == 2 and res["tokens_per_s"][name] > 0
    figures = bench_sft.sft_figures(res)
    assert figures["sft_tokens_per_step"] == 8 * 128
    assert figures["sft_lora_vs_trl"] > 0 and figures["sft_full_vs_trl"] > 0
    assert figures["sft_lora_check_ok"] and figures["sft_data_identical"] == 24
