"""The benchmarks' figure arithmetic (bench/bench_train.py, bench/bench_sft.py): which measured variants each
ratio compares; what the hardware does natively and what --quick skips for it; time budgets and the rounds
they leave; bench/run.py's JSON line; and bench_sft's data, tokenizer and (slow) quick path."""

import json
import sys
import types

import pytest

from bench import bench_sft, bench_train
from bench.bench_train import _shape_figures
from bench.common import (QUICK_BUDGET_S, TimeBudget, bf16_emulated, cpu_bf16_emulated, cpu_flags,
                          cuda_bf16_emulated, interleaved_runs, loop_figures, time_budget)

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


def test_without_bf16_figures_the_float32_ones_are_all_there():
    """--quick on a CPU without native bf16 measures no bf16 variant and no bf16 matmul: no bf16 figure, the
    float32 headline and the best-of figures over what ran."""
    tps = {"ours:fp32": 150.0, "hf-sdpa:fp32": 100.0, "hf-eager:fp32": 120.0}
    res = fake_result(tps)
    del res["matmul_bf16_flops"]
    figures = _shape_figures(res, list(tps), "")
    assert figures["train_vs_hf"] == 150 / 120 and figures["train_hf_best"] == "hf-eager:fp32"
    assert figures["train_ours_best"] == "ours:fp32" and figures["train_rounds[ours:fp32]"] == 3
    assert not [key for key in figures if "bf16" in key]


# ----------------------------------------------------------------------------- what the hardware does natively

def test_cpu_bf16_is_native_with_avx512_bf16_amx_or_arm_bf16_and_emulated_without():
    for flags in ({"avx2", "avx512f", "avx512_bf16"}, {"amx_bf16", "amx_tile"}, {"fp", "asimd", "bf16"}):
        assert cpu_bf16_emulated(frozenset(flags)) is None
    why = cpu_bf16_emulated(frozenset({"avx2", "fma", "avx512f", "avx512bw"}))  # e.g. a Zen 3 EPYC, a Skylake Xeon
    assert why.startswith("no native bf16 on this CPU") and "avx512_bf16" in why
    assert cpu_bf16_emulated(None).startswith("no native bf16 on this CPU")  # flags unreadable: say so, assume emulated


def test_cuda_bf16_is_native_from_compute_capability_8():
    assert cuda_bf16_emulated((8, 0)) is None and cuda_bf16_emulated((9, 0)) is None
    assert cuda_bf16_emulated((7, 5)) == ("no native bf16 on this GPU (compute capability 7.5; bf16 tensor cores "
                                          "need 8.0)")
    assert cuda_bf16_emulated((7, 5), rocm=True) is None


def test_cpu_flags_are_read_from_cpuinfo_on_x86_and_arm(tmp_path):
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\nCPU implementer\t: 0x41\n")
    assert cpu_flags(str(x86)) == {"fpu", "avx2", "fma"}
    assert cpu_flags(str(arm)) == {"fp", "asimd", "bf16", "i8mm"}
    assert cpu_flags(str(tmp_path / "missing")) is None


def test_this_machines_answer_follows_its_cpu_flags():
    assert bf16_emulated("cpu") == cpu_bf16_emulated(cpu_flags())


def test_quick_skips_every_bf16_measurement_on_a_cpu_without_it_and_says_why():
    why = cpu_bf16_emulated(frozenset({"avx2"}))
    plan, skipped, emulated = bench_train.precision_plan(bench_train._plan(True), True, why)
    specs, repeats, warmup = plan["tiny"]
    assert specs == ["ours:fp32", "hf-sdpa:fp32", "hf-eager:fp32"] and (repeats, warmup) == (7, 1)
    assert skipped == {"ours:bf16": why, "hf-sdpa:bf16": why, "matmul_bf16": why, "bf16_check": why}
    assert emulated == {}


def test_a_full_run_times_emulated_bf16_in_fewer_rounds_and_says_so():
    why = cpu_bf16_emulated(frozenset({"avx2"}))
    full = bench_train._plan(False)
    plan, skipped, emulated = bench_train.precision_plan(full, False, why)
    assert plan == full and skipped == {}
    assert set(emulated) == {"ours:bf16", "hf-sdpa:bf16", "hf-eager:bf16", "ours:bf16:compile",
                             "hf-sdpa:bf16:compile", "matmul_bf16", "bf16_check"}
    assert set(emulated.values()) == {why}
    # ... and with native bf16 nothing changes, in either mode
    for quick in (True, False):
        assert bench_train.precision_plan(bench_train._plan(quick), quick, None) == (bench_train._plan(quick), {}, {})


# ----------------------------------------------------------------------------- time budgets and rounds

def rounds(runs: dict) -> dict[str, int]:
    """How many rounds each name of an `interleaved_runs` result was timed in."""
    return {name: len(run["wall"]) for name, run in runs.items()}


class FakeClock:
    """Seconds that pass only when a timed function says so: budgets tested without waiting."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float):
        return lambda: setattr(self, "now", self.now + seconds)


def test_a_budget_that_allows_only_one_round_reports_one_round():
    clock = FakeClock()
    budget = TimeBudget(1.5, clock=clock)
    runs = interleaved_runs({"ours": clock.work(0.25), "peer": clock.work(0.5)}, repeats=7, warmup=1, budget=budget)
    # warm-up 0.75 s + a round 0.75 s = 1.5 s spent: another round would end past 1.5 s
    assert rounds(runs) == {"ours": 1, "peer": 1}
    res = {"runs": runs, "rate": {"ours": 1.0, "peer": 1.0}, "median_s": {"ours": 0.25, "peer": 0.5},
           "median_cpu_s": {"ours": 0.0, "peer": 0.0}}
    figures = loop_figures("x", res, "rate")
    assert figures["x_rounds[ours]"] == figures["x_rounds[peer]"] == 1


def test_rounds_fill_the_budget_and_an_exhausted_budget_still_times_one():
    clock = FakeClock()
    assert rounds(interleaved_runs({"a": clock.work(1.0)}, repeats=9, warmup=0,
                                   budget=TimeBudget(3.5, clock=clock))) == {"a": 3}
    spent = TimeBudget(2.0, clock=clock)
    clock.now += 5  # set-up and checks already took more than the budget: no warm-up, one timed round
    calls = []
    runs = interleaved_runs({"a": lambda: calls.append(clock.work(1.0)())}, repeats=9, warmup=2, budget=spent)
    assert rounds(runs) == {"a": 1} and len(calls) == 1
    assert rounds(interleaved_runs({"a": clock.work(1.0)}, repeats=4, warmup=0, budget=TimeBudget(None))) == {"a": 4}


def test_fewer_rounds_for_some_names_keeps_the_others_interleaved():
    calls = []
    runs = interleaved_runs({name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")},
                            repeats=4, warmup=0, gc_between=False, fewer_rounds={"b": 2})
    assert rounds(runs) == {"a": 4, "b": 2, "c": 4}
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "c", "c", "a"]


def test_default_budgets():
    assert time_budget(quick=True).seconds == QUICK_BUDGET_S == 60
    assert time_budget(quick=False).seconds is None
    assert time_budget(quick=True, seconds=0).seconds is None  # 0: no limit
    assert time_budget(quick=False, seconds=30).seconds == 30
    with pytest.raises(ValueError, match="negative"):
        TimeBudget(-1)


def test_the_json_line_carries_what_was_skipped_and_why(monkeypatch, capsys):
    """bench/run.py gives each benchmark --budget-s, and merges their "skipped" notes into the table and the
    JSON line (a stand-in benchmark module: the real one takes minutes)."""
    why = "no native bf16 on this CPU (none of the flags avx512_bf16, amx_bf16, bf16)"
    seen = {}

    def run(quick=False, budget_s=None):
        seen.update(quick=quick, budget_s=budget_s)
        return {"train_vs_hf": 1.4, "train_rounds[ours:fp32]": 2, "skipped": {"ours:bf16": why}, "emulated": {}}

    monkeypatch.setitem(sys.modules, "bench.bench_train", types.SimpleNamespace(run=run))
    from bench.run import main

    figures = main(["--quick", "--only", "train", "--budget-s", "45"])
    assert seen == {"quick": True, "budget_s": 45.0}
    out = capsys.readouterr().out
    line = json.loads(out.strip().splitlines()[-1])
    assert line["skipped"] == {"ours:bf16": why} and line["emulated"] == {}
    assert line["train_vs_hf"] == 1.4 and line["train_rounds[ours:fp32]"] == 2 and line["generate_vs_hf"] is None
    assert "skipped[ours:bf16]" in out and figures["skipped"] == {"ours:bf16": why}


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
    assert figures["sft_rounds[ours:lora]"] == 3  # the rounds the median step is of
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
