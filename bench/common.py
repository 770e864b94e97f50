"""Timing helpers shared by the benchmarks: medians, interleaved A/B runs, matmul peak, memory, tables.

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


def interleaved_runs(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                     gc_between: bool = True) -> dict[str, dict[str, list[float]]]:
    """Time several functions interleaved: round r runs them in order, round r+1 in reverse order.

    Alternating the order cancels the "who runs right after whom" bias (caches, CPU boost, a neighbour's
    burst of load). Returns, per name, the wall times ("wall"), this process's CPU times ("cpu", all
    threads; less sensitive to other processes' load than wall time) and minor page faults ("faults":
    fresh memory the kernel had to map and zero) of every timed call.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    runs: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": [], "faults": []} for name in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            if gc_between:
                gc.collect()
            faults_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            fns[name]()
            runs[name]["wall"].append(time.perf_counter() - wall_start)
            runs[name]["cpu"].append(time.process_time() - cpu_start)
            runs[name]["faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_start)
    return runs


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                gc_between: bool = True) -> dict[str, list[float]]:
    """Like `interleaved_runs`, but only the wall times: {name: [seconds of each timed call]}."""
    runs = interleaved_runs(fns, repeats=repeats, warmup=warmup, gc_between=gc_between)
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
    median step wall and CPU seconds, and page faults in MB, as `{prefix}_{figure}{suffix}[{loop}]`."""
    figures = {}
    for name in res["runs"] if names is None else names:
        figures[f"{prefix}_{rate}{suffix}[{name}]"] = res[rate][name]
        figures[f"{prefix}_step_s{suffix}[{name}]"] = res["median_s"][name]
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


def command_line(run, description: str, quick_help: str, argv: list[str] | None = None) -> dict:
    """The `python -m bench.bench_<name> [--quick]` entry point every benchmark shares:
    run it, print its figures as one JSON line, return them."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    result = run(quick=parser.parse_args(argv).quick)
    print(json.dumps(result, default=str))
    return result
