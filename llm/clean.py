"""Raw web data → a clean text dataset, the way FineWeb was made: the `clean` job and `workbench clean`.

The pipeline is datatrove's blocks (readers, the trafilatura extractor, the URL/Gopher/C4/FineWeb filters, the
four MinHash stages, the PII formatter, JSONL writers with exclusion writers) run by datatrove's
`LocalPipelineExecutor` with as many workers as the job's thread budget (`llm.threads`). Our own pieces are small:
reading the inputs into shards (`llm.clean_inputs`), an offline language filter (`llm.language_filter`), and the
steps that meter, sample and watch the run (`llm.clean_blocks`). The same stage lists run on datatrove's Slurm or
Ray executors when a corpus outgrows one machine (docs/clean.md).

    read      inputs → work/shards/NNNNN.jsonl                        (ours; skipped when work/input.json exists)
    filter    shards → URL → trafilatura → language → Gopher repetition → Gopher quality → C4 → FineWeb
              → work/filtered/                                         (tasks = shards)
    minhash   signatures (tasks = shards) → buckets (tasks = buckets) → clusters (1 task)
    finish    filtered → MinHash filter → PII → work/output/         (tasks = shards)
    then      work/output → <out>/clean.jsonl (`text`, `id`, `url`), <out>/report.json (`llm.clean_report`)

Resume: each stage's executor logs to work/logs/<stage>/ and writes datatrove's completion markers there, so a run
started again on the same `out_dir` after a killed worker redoes only the tasks that had not finished. Cancel: the
caller's `should_stop` is polled in a thread that writes work/STOP; every task checks for it every few documents and
stops without marking itself complete. Memory: documents stream one at a time through each task; what grows with the
corpus is the MinHash clustering stage (the duplicate pairs) and one document of at most `max_document_bytes`.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from llm.clean_config import CleanConfig
from llm.clean_inputs import InputSummary, NoDocuments, read_inputs, shard_size_for

ProgressCallback = Callable[[float, str], None]
# Share of the progress bar each stage takes (the filter stage does the expensive work: extraction, tokenising).
STAGE_WEIGHTS = {"read": 0.10, "filter": 0.60, "signatures": 0.12, "buckets": 0.04, "clusters": 0.02,
                 "finish": 0.12}
DATASET_FILE = "clean.jsonl"
REPORT_FILE = "report.json"


class CleanStoppedRun(Exception):
    """The run stopped because it was asked to; what finished is kept and a new run resumes it."""


class NothingLeft(ValueError):
    """Every document was removed: the report says by which step."""


def _workdirs(out_dir: Path) -> dict[str, Path]:
    work = out_dir / "work"
    return {name: work / name for name in ("shards", "logs", "removed", "kept", "filtered", "minhash", "output",
                                           "progress")} | {"work": work}


def _filter_pipeline(config: CleanConfig, dirs: dict[str, Path]) -> list:
    """The filter stage's steps: FineWeb's first pipeline, metered and sampled after each step."""
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    # Lazy, like the datatrove imports above: clean_blocks and language_filter import datatrove and the language
    # model at their top, which `workbench clean --help` and the job registry should not pay for.
    from llm.clean_blocks import HtmlExtractor, KeptSample, Meter, UrlBlockFilter, Watch, parse_domains
    from llm.language_filter import LanguageFilter

    def removed(step: str) -> JsonlWriter:
        return JsonlWriter(str(dirs["removed"] / step), output_filename="${rank}.jsonl", compression=None)

    language = config.language if config.language_filter else "en"
    english = language == "en"
    filters: list[tuple[str, object]] = []
    if config.url_filter:
        filters.append(("url", UrlBlockFilter(parse_domains(config.blocked_domains or ""),
                                              use_integrated_lists=config.fineweb_url_blocklist,
                                              exclusion_writer=removed("url"))))
    if config.extract_html:
        filters.append(("extract", HtmlExtractor(config.extraction_timeout, exclusion_writer=removed("extract"))))
    if config.language_filter:
        filters.append(("language", LanguageFilter(config.language, config.language_threshold,
                                                   exclusion_writer=removed("language"))))
    if config.gopher_repetition:
        filters.append(("gopher_repetition", GopherRepetitionFilter(language=language,
                                                                    exclusion_writer=removed("gopher_repetition"))))
    if config.gopher_quality:
        # Gopher's stop-word rule counts English stop words: off for another language (FineWeb-2 has per-language
        # lists we do not ship).
        filters.append(("gopher_quality", GopherQualityFilter(language=language,
                                                              min_stop_words=2 if english else None,
                                                              exclusion_writer=removed("gopher_quality"))))
    if config.c4_rules:
        filters.append(("c4", C4QualityFilter(filter_no_terminal_punct=False, language=language,
                                              exclusion_writer=removed("c4"))))
    if config.fineweb_rules:
        filters.append(("fineweb", FineWebQualityFilter(line_punct_thr=config.line_punctuation_ratio,
                                                        short_line_thr=config.short_line_ratio,
                                                        char_duplicates_ratio=config.duplicate_chars_ratio,
                                                        new_line_ratio=config.newlines_per_word, language=language,
                                                        exclusion_writer=removed("fineweb"))))
    steps: list = [JsonlReader(str(dirs["shards"]), compression=None, glob_pattern="*.jsonl"),
                   Watch(str(dirs["progress"] / "filter"), str(dirs["work"] / "STOP")), Meter("input")]
    for name, block in filters:
        steps += [block, Meter(name), KeptSample(str(dirs["kept"] / name), name, config.examples_per_reason)]
    steps.append(JsonlWriter(str(dirs["filtered"]), output_filename="${rank}.jsonl", compression=None))
    return steps


def _minhash_config(config: CleanConfig):
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    # FineWeb's: sha1 at 64 bits (fewer false collisions than xxhash), 5-grams, 14 buckets x 8 hashes.
    return MinhashConfig(hash_config=HashConfig(hash_fc="sha1", precision=64), num_buckets=config.minhash_buckets,
                         hashes_per_bucket=config.minhash_hashes_per_bucket, n_grams=config.minhash_ngrams)


def _stages(config: CleanConfig, dirs: dict[str, Path], filtered_files: int) -> list[tuple[str, list, int]]:
    """(stage, steps, tasks) after the filter stage: MinHash's three stages (when on), then the finish stage."""
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from llm.clean_blocks import CountingPIIFormatter, KeptSample, Meter, Watch

    language = config.language if config.language_filter else "en"
    minhash = _minhash_config(config)
    mh = dirs["minhash"]

    def reader() -> JsonlReader:
        return JsonlReader(str(dirs["filtered"]), compression=None, glob_pattern="*.jsonl")

    stages = []
    finish: list = [reader(), Watch(str(dirs["progress"] / "finish"), str(dirs["work"] / "STOP"))]
    if config.minhash:
        stages += [
            ("signatures", [reader(), Watch(str(dirs["progress"] / "signatures"), str(dirs["work"] / "STOP")),
                            MinhashDedupSignature(output_folder=str(mh / "signatures"), config=minhash,
                                                  language=language)], filtered_files),
            ("buckets", [MinhashDedupBuckets(input_folder=str(mh / "signatures"), output_folder=str(mh / "buckets"),
                                             config=minhash)], config.minhash_buckets),
            ("clusters", [MinhashDedupCluster(input_folder=str(mh / "buckets"), output_folder=str(mh / "remove_ids"),
                                              config=minhash)], 1),
        ]
        finish += [MinhashDedupFilter(input_folder=str(mh / "remove_ids"),
                                      exclusion_writer=JsonlWriter(str(dirs["removed"] / "minhash"),
                                                                   output_filename="${rank}.jsonl", compression=None)),
                   Meter("minhash"), KeptSample(str(dirs["kept"] / "minhash"), "minhash", config.examples_per_reason)]
    if config.pii:
        finish += [CountingPIIFormatter(), Meter("pii"),
                   KeptSample(str(dirs["kept"] / "pii"), "pii", config.examples_per_reason)]
    finish.append(JsonlWriter(str(dirs["output"]), output_filename="${rank}.jsonl", compression=None))
    stages.append(("finish", finish, filtered_files))
    return stages


class _Monitor:
    """Polls `should_stop` (→ the STOP file) and the tasks' progress files (→ `on_progress`) while a stage runs."""

    def __init__(self, dirs: dict[str, Path], should_stop: Callable[[], bool] | None,
                 on_progress: ProgressCallback | None, interval: float = 0.5):
        self.dirs, self.should_stop, self.on_progress, self.interval = dirs, should_stop, on_progress, interval
        self.stage, self.base, self.weight, self.total = "read", 0.0, 0.0, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="clean-monitor")

    @property
    def stop_file(self) -> Path:
        return self.dirs["work"] / "STOP"

    def stop_requested(self) -> bool:
        if self.stop_file.exists():
            return True
        if self.should_stop is not None and self.should_stop():
            self.stop_file.parent.mkdir(parents=True, exist_ok=True)
            self.stop_file.touch()
            return True
        return False

    def enter(self, stage: str, total: int) -> None:
        self.base = sum(weight for name, weight in STAGE_WEIGHTS.items()
                        if list(STAGE_WEIGHTS).index(name) < list(STAGE_WEIGHTS).index(stage))
        self.stage, self.weight, self.total = stage, STAGE_WEIGHTS[stage], total
        self.report(0)

    def documents_done(self) -> int:
        folder = self.dirs["progress"] / self.stage
        done = 0
        for path in folder.glob("[0-9]*") if folder.is_dir() else ():
            try:
                done += int(path.read_text() or 0)
            except (OSError, ValueError):
                pass
        return done

    def report(self, done: int) -> None:
        if self.on_progress is None:
            return
        share = min(1.0, done / self.total) if self.total else 0.0
        note = f"{self.stage}: {done:,} of {self.total:,} documents" if self.total else self.stage
        self.on_progress(self.base + self.weight * share, note)

    def _loop(self) -> None:
        while not self._done.wait(self.interval):
            self.stop_requested()
            if self.total:
                self.report(self.documents_done())

    def __enter__(self) -> "_Monitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=5)


def _run_stage(name: str, steps: list, tasks: int, workers: int, dirs: dict[str, Path], monitor: _Monitor,
               total: int, say: Callable[[str], None]) -> float:
    from datatrove.executor import LocalPipelineExecutor

    if monitor.stop_requested():
        raise CleanStoppedRun(f"stopped before the {name} stage")
    monitor.enter(name, total)
    executor = LocalPipelineExecutor(pipeline=steps, tasks=tasks, workers=max(1, min(workers, tasks)),
                                     logging_dir=str(dirs["logs"] / name))
    done = tasks - len(executor.get_incomplete_ranks())
    say(f"{name}: {tasks} task{'s' if tasks != 1 else ''}" + (f" ({done} already done, skipped)" if done else ""))
    started = time.perf_counter()
    try:
        executor.run()
    except Exception as error:
        if monitor.stop_requested():
            raise CleanStoppedRun(f"stopped during the {name} stage; finished tasks are kept") from None
        raise RuntimeError(f"the {name} stage failed ({type(error).__name__}: {error}); the tasks that finished "
                           f"are kept: run clean again on the same output folder to resume") from error
    return time.perf_counter() - started


def _concatenate(output_dir: Path, target: Path) -> tuple[int, int]:
    """work/output/*.jsonl → one JSONL file (`text`, `id`, `url`), written whole or not at all."""
    documents = size = 0
    partial = target.with_name(target.name + ".partial")
    with open(partial, "w", encoding="utf-8") as out:
        for path in sorted(output_dir.glob("*.jsonl")):
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    record = json.loads(line)
                    metadata = record.get("metadata") or {}
                    row = {"text": record["text"], "id": record.get("id")}
                    if metadata.get("url"):
                        row["url"] = metadata["url"]
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    documents += 1
                    size += len(record["text"].encode("utf-8"))
    os.replace(partial, target)
    return documents, size


def read_stage(inputs: list[Path], out_dir: Path, config: CleanConfig, *, shard_bytes: int) -> InputSummary:
    """The first stage: `inputs` → `out_dir`/work/shards/, its summary in work/input.json (which marks it done)."""
    dirs = _workdirs(Path(out_dir))
    shutil.rmtree(dirs["shards"], ignore_errors=True)
    summary = read_inputs([Path(p) for p in inputs], dirs["shards"], shard_bytes=shard_bytes,
                          max_document_bytes=config.max_document_bytes, examples_per_reason=config.examples_per_reason)
    (dirs["work"] / "input.json").write_text(json.dumps(summary.to_dict()))
    return summary


def datatrove_stages(config: CleanConfig, out_dir: Path, tasks: int) -> list[tuple[str, list, int]]:
    """Every stage after reading, as (name, datatrove steps, tasks), for any datatrove executor: `clean` runs them
    on `LocalPipelineExecutor`; docs/clean.md runs them on Slurm. `tasks`: the number of shards (each document
    stage reads the files of its rank; the MinHash buckets stage has one task per bucket)."""
    dirs = _workdirs(Path(out_dir))
    return [("filter", _filter_pipeline(config, dirs), tasks), *_stages(config, dirs, tasks)]


def clean(inputs: list[Path] | Path, out_dir: Path, config: CleanConfig | None = None, *, workers: int | None = None,
          on_progress: ProgressCallback | None = None, should_stop: Callable[[], bool] | None = None,
          say: Callable[[str], None] = print, shard_bytes: int | None = None) -> dict:
    """Clean `inputs` into `out_dir`/clean.jsonl with its report (`out_dir`/report.json); returns the report.

    Raises `CleanStoppedRun` when `should_stop` said so (call again to resume), `NoDocuments` when the inputs hold
    nothing readable, `NothingLeft` when every document was removed (the report is written first). `shard_bytes`
    overrides the size the inputs are cut into (default: about four shards per worker).
    """
    from llm.clean_report import build_report
    from llm.threads import thread_budget

    config = config or CleanConfig()
    inputs = [Path(p) for p in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    out_dir = Path(out_dir)
    if (out_dir / REPORT_FILE).is_file() and (out_dir / DATASET_FILE).is_file():
        say(f"{out_dir} is already cleaned: its report is {out_dir / REPORT_FILE}")
        return json.loads((out_dir / REPORT_FILE).read_text())
    workers = workers or thread_budget().threads
    dirs = _workdirs(out_dir)
    dirs["work"].mkdir(parents=True, exist_ok=True)
    (dirs["work"] / "STOP").unlink(missing_ok=True)
    os.environ.setdefault("DATATROVE_COLORIZE_LOGS", "0")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with _Monitor(dirs, should_stop, on_progress) as monitor:
        summary_file = dirs["work"] / "input.json"
        if summary_file.is_file():
            summary = InputSummary(**json.loads(summary_file.read_text()))
            say(f"read: done before ({summary.kept:,} documents in {len(summary.shards)} shards)")
        else:
            monitor.enter("read", 0)
            t = time.perf_counter()
            summary = read_stage(inputs, out_dir, config, shard_bytes=shard_bytes or shard_size_for(inputs, workers))
            timings["read"] = time.perf_counter() - t
            say(f"read: {summary.kept:,} documents ({summary.kept_bytes / 1e6:,.1f} MB) into "
                f"{len(summary.shards)} shards; removed while reading: {summary.removed or 'none'}")
        timings["filter"] = _run_stage("filter", _filter_pipeline(config, dirs), len(summary.shards), workers,
                                       dirs, monitor, summary.kept, say)
        filtered = sorted(dirs["filtered"].glob("*.jsonl"))
        left = sum(1 for path in filtered for _ in open(path, "rb"))
        if filtered:
            for name, steps, tasks in _stages(config, dirs, len(summary.shards)):  # as datatrove_stages
                total = left if name in ("signatures", "finish") else 0
                timings[name] = _run_stage(name, steps, tasks, workers, dirs, monitor, total, say)
        dirs["output"].mkdir(parents=True, exist_ok=True)
        documents, size = _concatenate(dirs["output"], out_dir / DATASET_FILE)
    timings["total"] = time.perf_counter() - started
    report = build_report(out_dir, config, summary, workers=workers, timings=timings,
                          output={"documents": documents, "bytes": size, "file": DATASET_FILE})
    report["config"] = asdict(config)
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=1, ensure_ascii=False))
    if not config.keep_removed:
        for name in ("shards", "filtered", "output", "removed", "minhash", "progress"):
            shutil.rmtree(dirs[name], ignore_errors=True)
    if on_progress is not None:
        on_progress(1.0, "done")
    if documents == 0:
        (out_dir / DATASET_FILE).unlink(missing_ok=True)
        raise NothingLeft(f"every document was removed ({report['summary']}); see {out_dir / REPORT_FILE}")
    say(f"clean: {report['summary']}")
    return report


__all__ = ["CleanConfig", "CleanStoppedRun", "NoDocuments", "NothingLeft", "clean", "datatrove_stages", "read_stage",
           "DATASET_FILE", "REPORT_FILE"]
