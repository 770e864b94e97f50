"""Run the benchmarks (train, generate, prepare, sft, preference), print one table of every figure, then one JSON line.

    python -m bench.run [--quick] [--budget-s S] [--only train,generate,prepare,sft,preference]
        (--only platform,labeling: the web-app benchmarks; --only defaults: the fine-tuning defaults' sweep,
         bench/sweep_defaults.py, tens of minutes; --only ddp: 1 vs 2 data-parallel ranks, bench/bench_ddp.py;
         --only threads: tiny pretraining alone and beside chat, with and without the thread budget;
         --only clean: the clean pipeline on a generated web corpus and its MinHash step vs datasketch;
         --only kto: KTO vs TRL's KTOTrainer, bench/bench_kto.py)
    workbench bench [--quick] [--budget-s S] [--only ...]

Each benchmark is a module `bench.bench_<name>` with `run(quick: bool = False, budget_s=None) -> dict` of
figures (the web-app ones, which run a fixed load for a fixed time, take no budget); they are imported only
when they run. `--budget-s` is each benchmark's own time budget (default 60 s with --quick): its timed rounds
are cut to fit and the rounds timed are reported beside each median (`*_rounds[...]`).

The last line printed is a JSON object with every scalar figure (the headline ratios `train_vs_hf`,
`generate_vs_hf`, `generate_samples_vs_hf`, `prepare_vs_tiktoken`, `train_flops_vs_matmul_peak`,
`sft_lora_vs_trl`, `sft_full_vs_trl`, `dpo_vs_trl`, `reward_vs_trl` always present, null where a benchmark did
not run or failed), plus `"skipped"` and `"emulated"`: {measurement: why} of what --quick left out and what a
full run timed in fewer rounds because the hardware only emulates it (e.g. `"ours:bf16": "no native bf16 on
this CPU (...)"`), so scripts can read `... | tail -1`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
import traceback

from bench.common import add_budget_argument, print_figures

BENCHMARKS = ("train", "generate", "prepare", "sft", "preference")  # what runs by default, in this order
# only with --only: the web app's fixed loads; the defaults' sweep; 1 vs 2 data-parallel ranks (torchrun, minutes);
# the thread budget beside chat (minutes: it starts processes); the clean pipeline and its MinHash vs datasketch;
# GRPO vs TRL GRPOTrainer (bench/bench_grpo.py: minutes, TRL samples slowly; its grpo_vs_trl is a headline)
OPTIONAL = ("platform", "labeling", "defaults", "ddp", "threads", "clean", "grpo", "kto")
BUDGETED_OPTIONAL = ("ddp", "threads", "grpo", "kto")  # optional benchmarks whose run() takes a time budget too
MODULES = {"defaults": "bench.sweep_defaults"}  # a benchmark whose module is not bench.bench_<name>
NOTES = ("skipped", "emulated")  # {measurement: why} each benchmark may return; merged into one of each
HEADLINE = ("train_vs_hf", "generate_vs_hf", "generate_samples_vs_hf", "prepare_vs_tiktoken",
            "train_flops_vs_matmul_peak", "sft_lora_vs_trl", "sft_full_vs_trl", "dpo_vs_trl", "reward_vs_trl",
            "grpo_vs_trl", "kto_vs_trl")


def _scalar(value):
    """A JSON-safe scalar: floats rounded to 6 significant digits, NaN/inf as null; None for containers."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    try:  # numpy / torch scalars
        return _scalar(value.item())
    except (AttributeError, ValueError, TypeError):
        return None


def _parse_only(text: str | None) -> list[str]:
    if not text:
        return list(BENCHMARKS)
    names = [name.strip().removeprefix("bench_") for name in text.split(",") if name.strip()]
    known = BENCHMARKS + OPTIONAL
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"bench: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [name for name in known if name in names]  # always in the canonical order


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="workbench bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs and fewer repeats (minutes, not tens)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)} "
                                       f"(default: all of them; also: {','.join(OPTIONAL)})")
    parser.add_argument("--json-out", metavar="FILE",
                        help="also write every figure, raw timings included, to FILE as JSON")
    add_budget_argument(parser)
    args = parser.parse_args(argv)
    selected = _parse_only(args.only)
    if args.quick and "torch" not in sys.modules:
        # OpenMP threads that wait for each other by sleeping, not spinning (read when torch loads libgomp). On a
        # busy 2-core machine a spinning thread burns the time slice its partner needs: the tiny shape's 2-thread
        # steps took 3-5x longer than with passive waits beside other processes (2026-12-07, load 8-10).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    figures: dict = {"bench_quick": args.quick, "bench_ran": ",".join(selected),
                     "bench_omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (spinning)")}
    notes: dict[str, dict[str, str]] = {note: {} for note in NOTES}
    failed: list[str] = []
    for name in selected:
        print(f"== bench_{name}{' (quick)' if args.quick else ''}", flush=True)
        start = time.perf_counter()
        try:
            module = importlib.import_module(MODULES.get(name, f"bench.bench_{name}"))
            budget = {"budget_s": args.budget_s} if name in BENCHMARKS + BUDGETED_OPTIONAL else {}
            result = module.run(quick=args.quick, **budget)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            figures[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        finally:
            figures[f"bench_{name}_seconds"] = time.perf_counter() - start
        for note in NOTES:
            for what, why in result.pop(note, {}).items():
                notes[note][what if what not in notes[note] else f"{name}:{what}"] = why
        for key, value in result.items():
            if key in figures and figures[key] != value and not key.startswith("machine_"):
                key = f"{name}_{key}"  # two benchmarks used one name: keep both
            figures[key] = value
        sys.stdout.flush()

    scalars = {key: _scalar(value) for key, value in figures.items() if not isinstance(value, (dict, list, tuple))}
    for key in HEADLINE:
        scalars.setdefault(key, None)
    figures.update(notes)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(figures, f, indent=1, sort_keys=True, default=_scalar)
    noted = {f"{note}[{what}]": why for note, whats in notes.items() for what, why in whats.items()}
    print_figures({**scalars, **noted}, "all figures")
    print(json.dumps({**scalars, **notes}, sort_keys=True), flush=True)
    if failed:
        raise SystemExit(1)
    return figures


if __name__ == "__main__":
    main()
