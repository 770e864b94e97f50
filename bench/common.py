"""Timing helpers shared by the benchmarks: medians, interleaved A/B runs, time budgets, what the hardware
does natively, matmul peak, memory, tables.

The machines these run on are shared and noisy, so every comparison is measured *interleaved*: one
repeat of A, one of B, one of B, one of A, ... in the same process, and compared by medians.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_median(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of `fn()` over `repeats` calls after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = [time_once(fn) for _ in range(repeats)]
    return median(times), times


# ---------------------------------------------------------------------------- time budgets

QUICK_BUDGET_S = 60.0  # --quick's default: wall-clock seconds one benchmark may take (issue 23: quick = minutes)


@dataclass
class TimeBudget:
    """The wall-clock seconds one benchmark may take, counted from when it was made; `seconds` None: no limit.

    Only warm-up and timed rounds are cut to fit it (`interleaved_runs`): set-up, correctness checks and memory
    probes are not, so a benchmark runs them first and its rounds fill what is left. At least one round is
    always timed, so a budget already spent still yields figures (and says: 1 round).
    """
    seconds: float | None = None
    clock: Callable[[], float] = time.perf_counter
    started: float = field(init=False)

    def __post_init__(self):
        if self.seconds is not None and self.seconds < 0:
            raise ValueError(f"a time budget cannot be negative, got {self.seconds} s")
        self.started = self.clock()

    def spent(self) -> float:
        return self.clock() - self.started

    def fits(self, seconds: float) -> bool:
        """Would `seconds` more work end within the budget?"""
        return self.seconds is None or self.spent() + seconds <= self.seconds


def time_budget(quick: bool, seconds: float | None = None) -> TimeBudget:
    """One benchmark's budget: `seconds` when given (0 = no limit), else QUICK_BUDGET_S with --quick, none in a
    full run. Every benchmark makes its own at its start (`run(quick, budget_s)`), so each gets the whole of it."""
    if seconds is None:
        seconds = QUICK_BUDGET_S if quick else 0
    return TimeBudget(seconds or None)


def add_budget_argument(parser) -> None:
    """`--budget-s`, the same for `workbench bench` and every `python -m bench.bench_<name>`."""
    parser.add_argument("--budget-s", type=float, metavar="SECONDS",
                        help=f"wall-clock seconds each benchmark may take; timed rounds are cut to fit, and the "
                             f"rounds timed are reported beside each median (default: {QUICK_BUDGET_S:g} with "
                             f"--quick, no limit otherwise; 0 = no limit)")


def interleaved_runs(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                     gc_between: bool = True, budget: TimeBudget | None = None,
                     fewer_rounds: dict[str, int] | None = None) -> dict[str, dict[str, list[float]]]:
    """Time several functions interleaved: round r runs them in order, round r+1 in reverse order.

    Alternating the order cancels the "who runs right after whom" bias (caches, CPU boost, a neighbour's
    burst of load). Returns, per name, the wall times ("wall"), this process's CPU times ("cpu", all
    threads; less sensitive to other processes' load than wall time) and minor page faults ("faults":
    fresh memory the kernel had to map and zero) of every timed call; `len(...["wall"])` is the number of
    rounds that name was timed in.

    `budget`: no warm-up round starts once it is spent (the loops built so far ran their first step already),
    and after the first timed round a round starts only if one more like the last still fits.
    `fewer_rounds`: {name: n}: names timed in the first n rounds only (an emulated precision, whose every
    call costs several of the others', in a full run).
    """
    names = list(fns)
    fewer_rounds = fewer_rounds or {}
    for _ in range(warmup):
        if budget is not None and not budget.fits(0):
            break
        for name in names:
            fns[name]()
    runs: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": [], "faults": []} for name in names}
    last_round_s = 0.0
    for r in range(repeats):
        if r > 0 and budget is not None and not budget.fits(last_round_s):
            break
        in_round = [name for name in names if r < fewer_rounds.get(name, repeats)]
        order = in_round if r % 2 == 0 else in_round[::-1]
        round_start = budget.clock() if budget is not None else 0.0
        for name in order:
            if gc_between:
                gc.collect()
            faults_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            fns[name]()
            runs[name]["wall"].append(time.perf_counter() - wall_start)
            runs[name]["cpu"].append(time.process_time() - cpu_start)
            runs[name]["faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_start)
        if budget is not None:
            last_round_s = budget.clock() - round_start
    return runs


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                gc_between: bool = True, budget: TimeBudget | None = None) -> dict[str, list[float]]:
    """Like `interleaved_runs`, but only the wall times: {name: [seconds of each timed call]}."""
    runs = interleaved_runs(fns, repeats=repeats, warmup=warmup, gc_between=gc_between, budget=budget)
    return {name: run["wall"] for name, run in runs.items()}


def paired_speedup(base: list[float], other: list[float]) -> float:
    """Median over rounds of base[i] / other[i]: how many times faster `other` is, round by round."""
    return median(b / o for b, o in zip(base, other))


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


# ---------------------------------------------------------------------------- figures of measured loops

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def loop_figures(prefix: str, res: dict, rate: str, names: Iterable[str] | None = None, suffix: str = "") -> dict:
    """Per loop measured by `interleaved_runs` (all of `res["runs"]`, or `names`): its throughput `res[rate]`,
    median step wall and CPU seconds, the rounds those medians are of, and page faults in MB, as
    `{prefix}_{figure}{suffix}[{loop}]`."""
    figures = {}
    for name in res["runs"] if names is None else names:
        figures[f"{prefix}_{rate}{suffix}[{name}]"] = res[rate][name]
        figures[f"{prefix}_step_s{suffix}[{name}]"] = res["median_s"][name]
        figures[f"{prefix}_rounds{suffix}[{name}]"] = len(res["runs"][name]["wall"])
        figures[f"{prefix}_step_cpu_s{suffix}[{name}]"] = res["median_cpu_s"][name]
        figures[f"{prefix}_page_faults_mb{suffix}[{name}]"] = median(res["runs"][name]["faults"]) * PAGE_MB
    return figures


def versus_peer_figures(key: str, res: dict, rate: str, variant: str, target: float, peer: str = "trl") -> dict:
    """Our loop `ours:{variant}` against the peer's `{peer}:{variant}`: throughput ratio (medians), paired
    speedup (round by round), CPU-time ratio, and the target the ratio is held to."""
    ours, theirs = f"ours:{variant}", f"{peer}:{variant}"
    return {f"{key}_vs_{peer}": ratio(res[rate][ours], res[rate][theirs]),
            f"{key}_vs_{peer}_paired": paired_speedup(res["runs"][theirs]["wall"], res["runs"][ours]["wall"]),
            f"{key}_vs_{peer}_cpu": ratio(res["median_cpu_s"][theirs], res["median_cpu_s"][ours]),
            f"{key}_target": target}


# ---------------------------------------------------------------------------- what the hardware does natively

# CPU flags (/proc/cpuinfo) of bf16 arithmetic in hardware: x86 AVX512-BF16 and AMX-BF16 (what oneDNN's bf16
# kernels use), ARM's BF16 extension. Without one, bf16 autocast converts to float32 and back around every op:
# slower than float32 itself (issue 23: 3-4x on a 2-core EPYC without AVX-512).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
CUDA_BF16_CAPABILITY = (8, 0)  # Ampere: the first NVIDIA GPUs with bf16 tensor cores


@lru_cache(maxsize=None)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags: the "flags" (x86) or "Features" (ARM) line of /proc/cpuinfo; None if unreadable."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return None


def cpu_bf16_emulated(flags: frozenset[str] | None) -> str | None:
    """Why bf16 would be emulated on a CPU with these flags, or None where it computes bf16 natively."""
    if flags is None:
        return "no native bf16 on this CPU (its flags could not be read from /proc/cpuinfo)"
    if flags & set(CPU_BF16_FLAGS):
        return None
    return f"no native bf16 on this CPU (none of the flags {', '.join(CPU_BF16_FLAGS)})"


def cuda_bf16_emulated(capability: tuple[int, int], rocm: bool = False) -> str | None:
    """Why bf16 would be emulated on a GPU of this compute capability, or None where it is native.
    (`torch.cuda.is_bf16_supported()` says True on older GPUs too: it counts emulation.)"""
    if rocm or tuple(capability) >= CUDA_BF16_CAPABILITY:
        return None
    major, minor = capability
    return (f"no native bf16 on this GPU (compute capability {major}.{minor}; bf16 tensor cores need "
            f"{CUDA_BF16_CAPABILITY[0]}.{CUDA_BF16_CAPABILITY[1]})")


def bf16_emulated(device: str = "cpu") -> str | None:
    """The one answer every benchmark uses: why bf16 would be emulated on `device` ("cpu", "cuda", "cuda:1"), a
    sentence for the tables and the JSON; None where the hardware computes bf16 itself."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return cuda_bf16_emulated(torch.cuda.get_device_capability(device), rocm=bool(torch.version.hip))
    return cpu_bf16_emulated(cpu_flags())


# ---------------------------------------------------------------------------- hardware figures

def matmul_flops(n: int = 2048, repeats: int = 7, dtype=None) -> float:
    """Measured FLOP/s of an n x n x n torch.mm (median of `repeats`), in the current thread setting."""
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    seconds, _ = time_median(lambda: torch.mm(a, b), repeats=repeats, warmup=2)
    return 2 * n ** 3 / seconds


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": _dt.date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector ISA torch's kernels use
        "cpu_bf16": bf16_emulated("cpu") or "native",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------------------- memory

def peak_rss_bytes() -> int:
    """High-water resident set size of this process (VmHWM on Linux).

    Not `ru_maxrss`: Linux carries it across fork + exec, so a subprocess started by a big parent
    reports the parent's size. VmHWM belongs to the process's own address space.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return peak_rss_bytes()


def stepped_loop_memory(make_loop, steps: int = 3) -> dict:
    """Peak RSS, and its growth over the process just before, of building a stepped training loop
    (`make_loop()` -> an object with start/step/close; see bench_sft) and running `steps` steps.
    Meant to run in a fresh process (`run_json_subprocess`), after the imports both sides pay."""
    import gc

    gc.collect()
    before = current_rss_bytes()
    loop = make_loop()
    loop.start()
    for _ in range(steps - 1):
        loop.step()
    peak = peak_rss_bytes()
    loop.close()
    return {"peak_rss_mb": peak / 2 ** 20, "train_rss_mb": (peak - before) / 2 ** 20}


def run_json_subprocess(module: str, function: str, kwargs: dict, timeout: float = 1800) -> dict:
    """Run `module.function(**kwargs)` in a fresh Python process and return the dict it returns.

    Used to measure peak memory (a process's RSS high-water mark cannot be reset) of one model at a time.
    """
    code = (
        "import json, sys, importlib\n"
        f"fn = getattr(importlib.import_module({module!r}), {function!r})\n"
        "result = fn(**json.loads(sys.argv[1]))\n"
        "print('@@RESULT@@' + json.dumps(result))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=root)
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@"):])
    raise RuntimeError(f"{module}.{function} failed in a subprocess (rc={proc.returncode}):\n{proc.stderr[-3000:]}")


# ---------------------------------------------------------------------------- output

def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1e9:
            return f"{value:.4g}"
        if abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.4g}"
    return str(value)


def print_table(rows: Iterable[tuple], headers: tuple | None = None, file=None) -> None:
    """Print rows (tuples) as an aligned plain-text table."""
    rows = [tuple(fmt(c) for c in row) for row in rows]
    if headers:
        rows = [tuple(str(h) for h in headers)] + rows
    if not rows:
        return
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(max(len(r) for r in rows))]
    out = file or sys.stdout
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip(), file=out)
        if headers and index == 0:
            print("  ".join("-" * w for w in widths), file=out)


def print_figures(figures: dict, title: str | None = None, file=None) -> None:
    if title:
        print(f"\n== {title}", file=file or sys.stdout)
    print_table(sorted(((k, v) for k, v in figures.items() if not isinstance(v, (dict, list))),
                       key=lambda kv: kv[0]), headers=("figure", "value"), file=file)


def command_line(run, description: str, quick_help: str, argv: list[str] | None = None,
                 budget: bool = False) -> dict:
    """The `python -m bench.bench_<name> [--quick] [--budget-s S]` entry point every benchmark shares:
    run it, print its figures as one JSON line, return them. `budget`: `run` takes `budget_s` (its timed rounds
    are cut to fit a time budget)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if budget:
        add_budget_argument(parser)
    args = parser.parse_args(argv)
    result = run(quick=args.quick, **({"budget_s": args.budget_s} if budget else {}))
    print(json.dumps(result, default=str))
    return result
