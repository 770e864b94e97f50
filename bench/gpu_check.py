"""The GPU check (issue 20 item 6): one script to run on a machine with a CUDA GPU, in under 8 minutes.

    python -m bench.gpu_check --out gpu_check.json        # on the GPU machine: every figure into the file
    python -m bench.gpu_check --cpu-smoke --out f.json    # the same steps on the CPU at the tiny shape (a test)

What it runs, each part on its own (a part that fails is recorded as `<part>_error` and the others still run;
the figures file is rewritten after every part, so a run cut short keeps what it measured):

  1. train     the 124M pretraining step (bench/bench_train.py's models, batch and optimizer) on the GPU in bf16
               autocast with torch.compile: our GPT against Hugging Face `GPT2LMHeadModel` (random init, the
               same shape; its own torch.compile), timed interleaved in one process. Figures: tokens/s of each,
               `train_vs_hf` (ours / HF), MFU of each (training FLOPs per token, 6N + attention, from our
               model's accounting, over the GPU's data-sheet dense bf16 peak, `llm.device.peak_flops`; the goal
               is >= 0.45 on an H100), the compile time and the GPU memory high-water mark of the run.
  2. ddp       our training loop as a person starts it: `torchrun --nproc_per_node=1 -m llm pretrain --device
               cuda` (one NCCL rank: the DDP path), the 124M preset on synthetic GPT-2 token ids. Figures:
               median tokens/s and MFU the loop itself recorded after its first steps (compile).
  3. fsdp      the same with `--parallelism fsdp` (one rank: FSDP's path, blocks compiled one by one).

`--cpu-smoke` runs the same three parts on the CPU (tiny shape, float32, no compile, gloo), so the script's
logic is tested where there is no GPU (tests/bench/test_gpu_check.py). Its figures say `"measured_on": "cpu"`
and are no GPU figures. Without a GPU and without `--cpu-smoke` the script refuses to run: it never writes a
GPU figure it did not measure.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIME_LIMIT_S = 8 * 60
GPU_PLAN = {"shape": "gpt2-124m", "batch": 16, "seq": 1024, "dtype": "bf16", "compile": True, "steps_per_call": 5,
            "repeats": 8, "warmup": 2, "loop_steps": 40, "loop_log_every": 5, "loop_skip_steps": 10}
CPU_PLAN = {"shape": "tiny", "batch": 2, "seq": 64, "dtype": "fp32", "compile": False, "steps_per_call": 1,
            "repeats": 1, "warmup": 0, "loop_steps": 2, "loop_log_every": 1, "loop_skip_steps": 1}
SYNTHETIC_TOKENS = 2_000_000  # 40 steps of 16 x 1024 draw 655k


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def _write(figures: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(figures, indent=1, sort_keys=True, default=str))
    tmp.replace(out)


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def train_part(plan: dict, device: str) -> dict:
    """Part 1: ours vs HF GPT-2, one process, interleaved (bench_train's models, batch and optimizer)."""
    import torch

    from bench.bench_train import Variant, flops_per_token, make_step
    from bench.common import interleaved_runs
    from llm.device import mfu, peak_flops

    preset, batch, seq = plan["shape"], plan["batch"], plan["seq"]
    specs = [f"{impl}:{plan['dtype']}" + (":compile" if plan["compile"] else "") for impl in ("ours", "hf-sdpa")]
    steps, first_s = {}, {}
    for spec in specs:
        step, _model = make_step(Variant.parse(spec), preset, batch, seq, device=device)
        started = time.perf_counter()
        step()
        _synchronize(device)
        first_s[spec] = time.perf_counter() - started

        def calls(step=step) -> None:
            for _ in range(plan["steps_per_call"]):
                step()
            _synchronize(device)

        steps[spec] = calls
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runs = interleaved_runs(steps, repeats=plan["repeats"], warmup=plan["warmup"])
    per_token = flops_per_token(preset, seq)
    peak = peak_flops(device)
    figures: dict = {"train_flops_per_token": per_token, "train_peak_flops": peak, "train_rounds": plan["repeats"]}
    tokens = {}
    for spec in specs:
        seconds = statistics.median(runs[spec]["wall"]) / plan["steps_per_call"]
        tokens[spec] = batch * seq / seconds
        figures[f"train_tokens_per_s[{spec}]"] = tokens[spec]
        figures[f"train_mfu[{spec}]"] = mfu(per_token, tokens[spec], peak)
        figures[f"train_first_step_s[{spec}]"] = first_s[spec]  # compile, where on
    figures["train_vs_hf"] = tokens[specs[0]] / tokens[specs[1]]
    if device == "cuda":
        figures["train_max_memory_allocated_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return figures


def _synthetic_prepared(directory: Path) -> Path:
    """Token shards of random GPT-2 ids (the loop's speed does not depend on what the tokens say)."""
    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    np.random.default_rng(0).integers(0, 50257, SYNTHETIC_TOKENS, dtype=np.uint16).tofile(directory / "train.bin")
    (directory / "val.bin").write_bytes(b"")
    (directory / "stats.json").write_text(json.dumps({"tokenizer": "gpt2", "dtype": "uint16", "vocab_size": 50257}))
    return directory


def loop_part(plan: dict, device: str, parallelism: str, work: Path, timeout_s: float) -> dict:
    """Parts 2 and 3: `torchrun --nproc_per_node=1 -m llm pretrain` (NCCL on CUDA, gloo on the CPU)."""
    prepared = _synthetic_prepared(work / "prepared")
    out = work / f"run-{parallelism}"
    preset = plan["shape"]
    args = ["pretrain", "--data", str(prepared), "--out", str(out), "--preset", preset,
            "--block-size", str(plan["seq"]), "--batch-size", str(plan["batch"]), "--grad-accum", "1",
            "--max-steps", str(plan["loop_steps"]), "--warmup", "2", "--log-every", str(plan["loop_log_every"]),
            "--eval-every", "0", "--checkpoint-every", "0", "--device", device,
            "--compile", "true" if plan["compile"] else "false", "--parallelism", parallelism]
    env = {key: value for key, value in os.environ.items() if key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "llm",
               *args]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=max(30.0, timeout_s))
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited {done.returncode}: {(done.stdout + done.stderr)[-1500:]}")
    said = done.stdout + done.stderr
    if "data parallel: 1 ranks" not in said:
        raise RuntimeError(f"the run did not take the distributed path: {said[-1500:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timed = [record for record in records if record["step"] > plan["loop_skip_steps"]] or records[-1:]
    name = f"loop_{parallelism}"
    figures = {f"{name}_tokens_per_s": statistics.median(record["tokens_per_s"] for record in timed),
               f"{name}_seconds": seconds, f"{name}_steps": plan["loop_steps"],
               f"{name}_final_loss": records[-1]["loss"],
               f"{name}_backend": "nccl" if device == "cuda" else "gloo"}
    if timed[-1].get("mfu") is not None:
        figures[f"{name}_mfu"] = statistics.median(record["mfu"] for record in timed)
    if parallelism == "fsdp" and "fully sharded (FSDP)" not in said:
        raise RuntimeError(f"the run did not shard: {said[-1500:]}")
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="the figures file (JSON), rewritten after each part")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run every part on the CPU at the tiny shape: tests the script, measures no GPU")
    parser.add_argument("--batch", type=int, help=f"sequences per step (default {GPU_PLAN['batch']} on the GPU)")
    parser.add_argument("--parts", default="train,ddp,fsdp", help="which parts, comma-separated")
    args = parser.parse_args(argv)

    import torch

    deadline = Deadline(TIME_LIMIT_S)
    if args.cpu_smoke:
        device, plan = "cpu", dict(CPU_PLAN)
    elif torch.cuda.is_available():
        device, plan = "cuda", dict(GPU_PLAN)
    else:
        raise SystemExit("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False); nothing was "
                         "measured. Use --cpu-smoke to test the script on the CPU.")
    if args.batch:
        plan["batch"] = args.batch
    out = Path(args.out)
    figures: dict = {
        "measured_on": device, "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "CPU (--cpu-smoke: not a GPU figure)",
        "torch": torch.__version__, "cuda": torch.version.cuda, "plan": plan,
    }
    _write(figures, out)
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        for part in parts:
            started = time.perf_counter()
            print(f"== {part} ({deadline.left():.0f} s left of {TIME_LIMIT_S} s)", flush=True)
            try:
                if deadline.left() < 30:
                    raise TimeoutError("no time left in the 8-minute limit")
                if part == "train":
                    figures.update(train_part(plan, device))
                elif part in ("ddp", "fsdp"):
                    figures.update(loop_part(plan, device, part, Path(folder), deadline.left() - 10))
                else:
                    raise ValueError(f"unknown part {part!r}: choose from train, ddp, fsdp")
            except Exception as error:  # one part's failure must not hide the others' figures
                figures[f"{part}_error"] = f"{type(error).__name__}: {error}"[:2000]
            figures[f"{part}_part_seconds"] = time.perf_counter() - started
            if device == "cuda":
                torch.cuda.empty_cache()
            _write(figures, out)
    figures["total_seconds"] = TIME_LIMIT_S - deadline.left()
    _write(figures, out)
    for key in sorted(figures):
        if key != "plan":
            print(f"{key}: {figures[key]}")
    return figures


if __name__ == "__main__":
    result = main()
    sys.exit(1 if any(key.endswith("_error") for key in result) else 0)
