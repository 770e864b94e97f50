"""bench/gpu_check.py, the script for a machine with a GPU, run where there is none: `--cpu-smoke` takes every step
on the CPU at the tiny shape (ours vs HF GPT-2, then the loop under torchrun with 1 gloo rank) and writes the
figures file, which says it measured the CPU; without a GPU and without --cpu-smoke it measures nothing."""

from __future__ import annotations

import json

import pytest

from bench import gpu_check


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_gpu_script_runs_on_the_cpu_and_writes_its_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "figures" / "gpu_check.json"
    figures = gpu_check.main(["--cpu-smoke", "--out", str(out), "--parts", "train,ddp"])
    written = json.loads(out.read_text())
    assert written["measured_on"] == "cpu" and "not a GPU figure" in written["device_name"]
    assert not [key for key in written if key.endswith("_error")], {k: v for k, v in written.items() if "error" in k}
    for key in ("train_tokens_per_s[ours:fp32]", "train_tokens_per_s[hf-sdpa:fp32]", "train_mfu[ours:fp32]",
                "train_vs_hf", "loop_ddp_tokens_per_s", "loop_ddp_mfu"):
        assert written[key] > 0, key
    assert written["loop_ddp_backend"] == "gloo" and written["total_seconds"] < gpu_check.TIME_LIMIT_S
    assert figures["train_vs_hf"] == written["train_vs_hf"]


def test_without_a_gpu_it_measures_nothing(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    with pytest.raises(SystemExit, match="nothing was measured"):
        gpu_check.main(["--out", str(out)])
    assert not out.exists()
