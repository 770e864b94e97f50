"""Peak memory of the `clean` pipeline on a large input (issue 22: "state the peak for a 1 GB input").

Generates the input straight to disk (never whole in memory), runs `llm.clean.clean` on it in a fresh process and
samples that process's whole tree (the process that runs datatrove's executor, its pool workers, trafilatura's
sandbox) every half second: the sum of RSS, the sum of PSS (shared pages counted once), the largest single
process, per stage (read, filter, signatures, buckets, clusters, finish; a stage starts when the pipeline says so).
At the end: each process's VmHWM (read while it lived) and the largest waited-for descendant's ru_maxrss, which
catch peaks shorter than a sample.

  text input  (default) JSONL records with `text`: English prose (`llm.synthetic_web`), a fifth with e-mails and
              IPs, one in ten followed by a near-duplicate (three words changed), French/German, spam, menus.
              Extraction is skipped (trafilatura's memory is per page and was measured flat, bench/README.md).
  --html      `llm.synthetic_web.mixed_corpus` pages (HTML articles with menus, banners, footers), 1,000 at a time.

  --no-filters  the filter stage's steps off, so the MinHash and PII stages see every document: their peak at the
              input's whole size, in a quarter of the time (on one quiet core the filters run at 0.19 MB/s, the MinHash
              signatures at 0.6 MB/s).

Run: `python -m bench.clean_memory --mb 1024 [--html] [--no-filters] [--workers 1] [--folder /tmp/x] [--json r.json]`.
The input and output go to a temporary folder (or --folder), deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

STAGES = ("read", "filter", "signatures", "buckets", "clusters", "finish")
SAY = "@@SAY@@"
RESULT = "@@RESULT@@"


# ---------------------------------------------------------------------------- input

def text_records(seed: int = 0) -> Iterator[dict]:
    """Endless JSONL records with `text` that give every stage work: language, quality rules, MinHash, PII."""
    from llm.synthetic_web import english_text, foreign_text, menu_text, near_duplicate, spam_text, with_pii

    rng = random.Random(seed)
    number = 0
    while True:
        number += 1
        url = f"https://site{rng.randint(1, 500)}.example.org/page/{number}"
        roll = rng.random()
        if roll < 0.75:
            body = english_text(rng, rng.randint(24, 40))
            if rng.random() < 0.2:
                body = with_pii(body, rng)
            yield {"text": body, "url": url}
            if rng.random() < 0.1:
                yield {"text": near_duplicate(body, rng), "url": url.replace("/page/", "/copy/")}
        elif roll < 0.90:
            yield {"text": foreign_text(rng, rng.choice(("fr", "de"))), "url": url}
        elif roll < 0.95:
            yield {"text": spam_text(rng), "url": url}
        else:
            yield {"text": menu_text(rng), "url": url}


def html_records(seed: int = 0) -> Iterator[dict]:
    from llm.synthetic_web import mixed_corpus

    batch = 0
    while True:
        yield from mixed_corpus(1000, seed * 1_000_003 + batch)
        batch += 1


def write_input(path: Path, megabytes: float, html: bool = False, seed: int = 0) -> tuple[int, int]:
    """Write records to `path` until it holds `megabytes` MB (10^6 bytes); (bytes, documents)."""
    target = int(megabytes * 1e6)
    size = documents = 0
    records = html_records(seed) if html else text_records(seed)
    with open(path, "w", encoding="utf-8") as handle:
        while size < target:
            line = json.dumps(next(records)) + "\n"
            handle.write(line)
            size += len(line.encode("utf-8"))
            documents += 1
    return size, documents


# ---------------------------------------------------------------------------- sampling

def _vm_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class TreeSampler:
    """Samples a process and all its descendants every `interval` s in a thread; peaks overall and per stage."""

    def __init__(self, pid: int, interval: float = 0.5, progress_file: Path | None = None, every: float = 60.0):
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.progress_file, self.every = progress_file, every  # the figures so far, every `every` s
        self.stage = "start"
        self.stage_started: dict[str, float] = {}
        self.per_stage: dict[str, dict] = {}
        self.hwm: dict[int, tuple[int, str]] = {}  # pid → (VmHWM, name)
        self.samples = 0
        self.most_processes = 0
        self._started = time.perf_counter()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="tree-sampler")

    def enter(self, stage: str) -> None:
        self.stage = stage
        self.stage_started.setdefault(stage, time.perf_counter() - self._started)

    def sample(self) -> None:
        import psutil

        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        rss_sum = pss_sum = largest = 0
        for process in processes:
            try:
                info = process.memory_full_info()
            except psutil.Error:
                continue
            rss_sum += info.rss
            pss_sum += getattr(info, "pss", info.rss)
            largest = max(largest, info.rss)
            hwm = _vm_hwm(process.pid)
            if hwm > self.hwm.get(process.pid, (0, ""))[0]:
                try:
                    name = " ".join(process.cmdline()[:3])[:80]
                except psutil.Error:
                    name = "?"
                self.hwm[process.pid] = (hwm, name)
        self.samples += 1
        self.most_processes = max(self.most_processes, len(processes))
        peaks = self.per_stage.setdefault(self.stage, {"tree_rss": 0, "tree_pss": 0, "largest_process_rss": 0})
        peaks["tree_rss"] = max(peaks["tree_rss"], rss_sum)
        peaks["tree_pss"] = max(peaks["tree_pss"], pss_sum)
        peaks["largest_process_rss"] = max(peaks["largest_process_rss"], largest)

    def _loop(self) -> None:
        written = time.perf_counter()
        while not self._done.is_set():
            self.sample()
            if self.progress_file is not None and time.perf_counter() - written >= self.every:
                written = time.perf_counter()
                figures = self.figures() | {"stage": self.stage, "elapsed_s": written - self._started}
                self.progress_file.write_text(json.dumps(figures, indent=1))
            self._done.wait(self.interval)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def figures(self) -> dict:
        mb = 2 ** 20
        overall = {key: max((peaks[key] for peaks in self.per_stage.values()), default=0) / mb
                   for key in ("tree_rss", "tree_pss", "largest_process_rss")}
        return {"peak_tree_rss_mb": overall["tree_rss"], "peak_tree_pss_mb": overall["tree_pss"],
                "peak_largest_process_rss_mb": overall["largest_process_rss"],
                "vm_hwm_mb": sorted(((hwm / mb, name) for hwm, name in self.hwm.values()), reverse=True),
                "per_stage_mb": {stage: {key: value / mb for key, value in peaks.items()}
                                 for stage, peaks in self.per_stage.items()},
                "stage_started_s": self.stage_started, "samples": self.samples,
                "most_processes": self.most_processes}


# ---------------------------------------------------------------------------- the pipeline, in a fresh process

def _pipeline(corpus: str, out: str, workers: int, filters: bool = True) -> None:
    """In the child: clean `corpus`, printing each of the pipeline's lines (for the stage) and the report's counts.
    Without `filters`, every step before MinHash is switched off, so every document reaches the MinHash and PII
    stages."""
    from llm.clean import clean
    from llm.clean_config import STEPS, CleanConfig

    config = CleanConfig()
    if not filters:
        config = CleanConfig(**{switch: False for switch, name, _ in STEPS if name not in ("minhash", "pii")})

    def say(line: str) -> None:
        print(SAY + line, flush=True)

    started = time.perf_counter()
    report = clean([Path(corpus)], Path(out), config, workers=workers, say=say)
    result = {"seconds": time.perf_counter() - started, "documents_in": report["input"]["documents"],
              "bytes_in": report["input"]["bytes"], "documents_out": report["output"]["documents"],
              "bytes_out": report["output"]["bytes"], "timings": report["timings"],
              "main_vm_hwm_mb": _vm_hwm(os.getpid()) / 2 ** 20}
    print(RESULT + json.dumps(result), flush=True)


def measure(corpus: Path, out: Path, workers: int = 1, interval: float = 0.5, nice: int = 0,
            progress_file: Path | None = None, filters: bool = True) -> dict:
    """Run the pipeline on `corpus` in a fresh process, sampling its tree; the figures (and, every minute while it
    runs, the figures so far in `progress_file`: a run cut short still says what it reached)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + (os.pathsep + os.environ["PYTHONPATH"]
                                              if os.environ.get("PYTHONPATH") else ""))
    code = (f"from bench.clean_memory import _pipeline; "
            f"_pipeline({str(corpus)!r}, {str(out)!r}, {workers}, {filters})")
    load_before = os.getloadavg()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, cwd=root, preexec_fn=(lambda: os.nice(nice)) if nice else None)
    result: dict | None = None
    tail: list[str] = []
    with TreeSampler(process.pid, interval, progress_file) as sampler:
        sampler.enter("read")
        for line in process.stdout:
            line = line.rstrip("\n")
            if line.startswith(RESULT):
                result = json.loads(line[len(RESULT):])
            elif line.startswith(SAY):
                said = line[len(SAY):]
                print(f"[{time.perf_counter() - started:8.1f} s] {said}", flush=True)
                stage = said.split(":", 1)[0]
                if stage in STAGES:
                    sampler.enter(stage)
            else:
                tail = (tail + [line])[-40:]
        process.wait()
    if result is None:
        raise RuntimeError(f"the pipeline failed (rc={process.returncode}):\n" + "\n".join(tail))
    seconds = result["seconds"]
    return {**result, **sampler.figures(),
            "largest_descendant_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "input_mb": corpus.stat().st_size / 1e6, "workers": workers,
            "docs_per_s": result["documents_in"] / seconds, "mb_per_s": corpus.stat().st_size / 1e6 / seconds,
            "load_average": f"{load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}",
            "load_average_15min": f"{load_before[2]:.1f} -> {os.getloadavg()[2]:.1f}"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1024, help="input size in MB (10^6 bytes); default 1024")
    parser.add_argument("--html", action="store_true", help="HTML pages (extraction on) instead of text documents")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--folder", help="where the input and output go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the input and output")
    parser.add_argument("--no-filters", action="store_true",
                        help="switch the filter stage's steps off: every document reaches the MinHash and PII stages, "
                             "which are then measured at the input's whole size (text input only)")
    parser.add_argument("--nice", type=int, default=0, help="niceness added to the pipeline's process")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.no_filters and args.html:
        parser.error("--no-filters needs text input: HTML pages are extracted in the filter stage")
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="clean-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        corpus = folder / ("pages.jsonl" if args.html else "texts.jsonl")
        started = time.perf_counter()
        size, documents = write_input(corpus, args.mb, html=args.html)
        print(f"input: {corpus} {size / 1e6:,.1f} MB, {documents:,} documents, written in "
              f"{time.perf_counter() - started:,.0f} s", flush=True)
        progress = Path(args.json).with_suffix(".partial.json") if args.json else None
        figures = measure(corpus, folder / "out", workers=args.workers, nice=args.nice, progress_file=progress,
                          filters=not args.no_filters)
        figures["filters"] = "off (--no-filters)" if args.no_filters else "on (the defaults)"
        figures["input"] = "html pages (mixed_corpus)" if args.html else "text documents"
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return figures


if __name__ == "__main__":
    main()
