"""Data-parallel pretraining on this machine: 1 rank vs 2 ranks (torchrun, CPU gloo), the same global batch.

    python -m bench.bench_ddp [--quick]          workbench bench --only ddp

Both runs train the tiny preset on the same token stream with the same global batch (1 rank: grad_accum 2A;
2 ranks: grad_accum A each), each process with its thread budget (llm/threads.py: alone it takes every core,
each of 2 ranks half of them). Figures:

  ddp_tokens_per_s[1 rank] / [2 ranks]   global training tokens/s, median over the steps after the warm-up
  ddp_tokens_per_s[1 rank, threads of one of 2 ranks]   1 rank with the threads each of the 2 ranks has
  ddp_speedup                            tokens/s on 2 ranks / tokens/s on 1 rank (each with its budget): what a
                                         person gains by starting 2 ranks instead of 1 on this machine
  ddp_scaling_efficiency                 tokens/s on 2 ranks / (2 × tokens/s of 1 rank with the same threads per
                                         process): 1.0 is perfect data-parallel scaling
  ddp_allreduce_ms                       one all-reduce of every gradient (the model's parameter count in
                                         float32) between the 2 ranks, median of 20: what DDP adds per step
  ddp_allreduce_share                    that time / the 2-rank step time
  ddp_max_loss_difference                the largest |loss(1 rank) - loss(2 ranks)| over the run's steps: the
                                         two are the same training (tests/llm/test_ddp.py asserts < 1e-5)

Every rank is a process that runs this module with `--rank-run` (under torchrun for 2 ranks, alone for 1); rank
0 writes its figures to a JSON file. On a machine with C cores the 1-rank run uses C threads and each of 2
ranks C/2: on 2 cores, 2 ranks cannot beat 1 rank by much, which is what this benchmark says honestly.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB = 2048
BLOCK = 128
BATCH = 8
MICRO_BATCHES = 4  # per optimizer step, in all: 1 rank accumulates 4, each of 2 ranks 2
WARMUP_STEPS = 2   # steps left out of the medians (allocation, first-touch, DDP's bucket rebuild)
ALLREDUCE_REPEATS = 20


def _write_tokens(directory: Path, tokens: int = 400_000) -> None:
    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    np.random.default_rng(0).integers(0, VOCAB, tokens, dtype=np.uint16).tofile(directory / "train.bin")
    (directory / "val.bin").write_bytes(b"")
    (directory / "stats.json").write_text(json.dumps({"tokenizer": "synthetic", "dtype": "uint16",
                                                      "vocab_size": VOCAB}))


def rank_run(settings: dict) -> None:
    """One rank's (or the single process's) training run; rank 0 writes the figures to settings["result"]."""
    import numpy as np
    import torch
    import torch.distributed as dist

    from llm import distributed
    from llm.dataloader import BatchSampler, TokenData
    from llm.model import GPT, config_from_preset
    from llm.pretrain import NextTokenObjective
    from llm.threads import apply_thread_budget
    from llm.train import TrainConfig, train

    budget = apply_thread_budget(log=None)
    config = TrainConfig(max_steps=settings["steps"], batch_size=BATCH, block_size=BLOCK,
                         grad_accum=settings["grad_accum"], lr=1e-3, warmup=2, eval_every=0, log_every=1,
                         checkpoint_every=0, device="cpu", compile=False, peak_flops=1e12)
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", VOCAB, block_size=BLOCK))
    batches = BatchSampler(TokenData(settings["prepared"], "train"), BATCH, BLOCK, seed=1)
    objective = NextTokenObjective(None, np.ones(VOCAB, dtype=np.int64), BATCH, BLOCK, 1)
    records: list[dict] = []
    started = time.perf_counter()
    train(model, objective, batches, config, settings["out"], on_metrics=records.append, resume=False,
          log=lambda line: None)
    seconds = time.perf_counter() - started
    ranks = distributed.ranks_from_environment()
    allreduce_ms = None
    if dist.is_initialized():
        flat = torch.zeros(sum(p.numel() for p in model.parameters()))
        times = []
        for _ in range(ALLREDUCE_REPEATS + 2):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(flat)
            times.append(time.perf_counter() - start)
        allreduce_ms = 1000 * statistics.median(times[2:])
    if ranks.is_main:
        timed = [r for r in records if r["step"] > WARMUP_STEPS]
        Path(settings["result"]).write_text(json.dumps({
            "losses": [r["loss"] for r in records], "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
            "step_s": statistics.median(BATCH * BLOCK * MICRO_BATCHES / r["tokens_per_s"] for r in timed),
            "threads": budget.threads, "thread_reason": budget.reason, "seconds": seconds,
            "allreduce_ms": allreduce_ms, "parameters": sum(p.numel() for p in model.parameters())}))
    distributed.leave()


def _launch(ranks: int, settings: dict, work: Path, threads: int | None = None) -> dict:
    """One run: `ranks` processes, each with its thread budget (or `threads` each, through OMP_NUM_THREADS)."""
    name = f"{ranks}-{threads or 'budget'}"
    settings = {**settings, "grad_accum": MICRO_BATCHES // ranks, "out": str(work / f"run{name}"),
                "result": str(work / f"result{name}.json")}
    env = {key: value for key, value in os.environ.items()
           if key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "OMP_NUM_THREADS",
                          "WORKBENCH_JOB_PROCESSES")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    # Threads that sleep while they wait: on a shared machine spinning ones measure the neighbours, not DDP.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    module = ["-m", "bench.bench_ddp", "--rank-run", json.dumps(settings)]
    command = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] + module
               if ranks > 1 else [sys.executable] + module)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{ranks}-rank run failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(Path(settings["result"]).read_text())


def _median_run(runs: list[dict]) -> dict:
    """The run whose tokens/s is the median (its other figures with it); rounds alternate the setups, so a
    neighbour's burst of load falls on all of them alike."""
    return sorted(runs, key=lambda result: result["tokens_per_s"])[len(runs) // 2]


def run(quick: bool = False, budget_s: float | None = None) -> dict:
    from bench.common import machine_info, print_table, time_budget

    budget = time_budget(quick, budget_s)
    steps, rounds = (12, 1) if quick else (30, 3)
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {"one": [], "one_thread": [], "two": []}
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as folder:
        work = Path(folder)
        _write_tokens(work / "prepared")
        settings = {"prepared": str(work / "prepared"), "steps": steps}
        for _ in range(rounds):
            round_started = time.perf_counter()
            runs["one"].append(_launch(1, settings, work))
            runs["two"].append(_launch(2, settings, work))
            threads = runs["two"][-1]["threads"]
            runs["one_thread"].append(_launch(1, settings, work, threads=threads)
                                      if threads != runs["one"][-1]["threads"] else runs["one"][-1])
            if not budget.fits(time.perf_counter() - round_started):
                break
    one, two, one_thread = (_median_run(runs[name]) for name in ("one", "two", "one_thread"))
    difference = max(abs(a - b) for a, b in zip(runs["one"][0]["losses"], runs["two"][0]["losses"]))
    figures = {
        "ddp_tokens_per_s[1 rank]": one["tokens_per_s"], "ddp_tokens_per_s[2 ranks]": two["tokens_per_s"],
        "ddp_tokens_per_s[1 rank, threads of one of 2 ranks]": one_thread["tokens_per_s"],
        "ddp_speedup": two["tokens_per_s"] / one["tokens_per_s"],
        "ddp_scaling_efficiency": two["tokens_per_s"] / (2 * one_thread["tokens_per_s"]),
        "ddp_allreduce_ms": two["allreduce_ms"], "ddp_allreduce_share": two["allreduce_ms"] / 1000 / two["step_s"],
        "ddp_step_ms[1 rank]": 1000 * one["step_s"], "ddp_step_ms[2 ranks]": 1000 * two["step_s"],
        "ddp_threads[1 rank]": one["threads"], "ddp_threads[2 ranks]": two["threads"],
        "ddp_max_loss_difference": difference, "ddp_steps": steps, "ddp_rounds": len(runs["two"]),
        "ddp_parameters": one["parameters"], "ddp_global_batch_tokens": BATCH * BLOCK * MICRO_BATCHES,
        "ddp_omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "ddp_load_average": f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
        **{f"machine_{key}": value for key, value in machine_info().items()},
    }
    print_table([("1 rank", one["threads"], one["tokens_per_s"], 1000 * one["step_s"], None),
                 ("1 rank", one_thread["threads"], one_thread["tokens_per_s"], 1000 * one_thread["step_s"], None),
                 ("2 ranks", two["threads"], two["tokens_per_s"], 1000 * two["step_s"], two["allreduce_ms"])],
                headers=("run", "threads/rank", "tokens/s", "step ms", "all-reduce ms"))
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rank-run":
        rank_run(json.loads(sys.argv[2]))
    else:
        from bench.common import command_line

        command_line(run, __doc__.splitlines()[0], "12 steps and 1 round instead of 30 and 3", budget=True)
