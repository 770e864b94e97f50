"""The `clean` kind's handler: `llm.clean.clean` on the job's dataset into the job's run directory (runs/<id>/clean),
its stages as the progress bar and log lines, its report's funnel as metrics; on success the clean corpus becomes a
text dataset whose stats say where it came from (`cleaned_from`: the input dataset and this job) and carry the
report. A resumed attempt (a worker killed mid-run) runs `clean` again on the same folder: datatrove's completion
markers make it redo only the tasks that had not finished."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Dataset, DatasetKind
from llm.params import settings_of
from worker.jobs.context import JobContext, Outcome, dataset_path

PROGRESS_LOG_INTERVAL_S = 10.0


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(ctx: JobContext) -> Outcome:
    from llm.clean import DATASET_FILE, REPORT_FILE, CleanStoppedRun, clean
    from llm.clean_config import CleanConfig
    from llm.corpus import inspect_corpus
    from llm.stats import length_histogram
    from llm.threads import thread_budget

    config = CleanConfig(**{name: ctx.params[name] for name in settings_of(CleanConfig) if name in ctx.params})
    source = dataset_path(ctx)
    out = ctx.run_dir / "clean"
    if ctx.attempt > 1 and out.exists():
        ctx.log("a resumed attempt: the stages' finished tasks are kept, only the unfinished ones run again")
    last_log = [0.0]

    def progress(fraction: float, note: str) -> None:
        ctx.set_progress(fraction)
        now = time.monotonic()
        if now - last_log[0] >= PROGRESS_LOG_INTERVAL_S:
            last_log[0] = now
            ctx.log(f"{fraction:.0%} {note}")

    started = time.perf_counter()
    try:
        report = clean([source], out, config, workers=thread_budget().threads, on_progress=progress,
                       should_stop=ctx.should_stop, say=ctx.log)
    except CleanStoppedRun as stopped:
        return Outcome(stopped=True, summary=f"{stopped}; resuming the job continues where it stopped")
    seconds = time.perf_counter() - started
    for index, entry in enumerate(report["funnel"]):
        ctx.on_metrics({"step": index, "documents_left": entry["documents"]})
    source_documents = report["input"]["documents"]
    ctx.on_metrics({"step": len(report["funnel"]), "documents_in": source_documents,
                    "documents_out": report["output"]["documents"],
                    "removed_share": 1 - report["output"]["documents"] / max(1, source_documents),
                    "mb_per_s": report["input"]["bytes"] / 1e6 / max(seconds, 1e-9)})
    for line in report["summary"].split("; "):
        ctx.log(line)
    clean_file = out / DATASET_FILE
    corpus = inspect_corpus(clean_file, preview=5)
    lengths = list(corpus.get("document_lengths") or [])
    stats = {key: value for key, value in corpus.items() if key not in ("document_lengths", "preview")}
    stats["preview"] = [text[:500] for text in corpus.get("preview", [])]
    stats["length_histogram"] = length_histogram(lengths)
    stats["cleaned_from"] = {"dataset_id": ctx.dataset.id, "dataset_name": ctx.dataset.name, "job_id": ctx.job_id}
    stats["clean_report"] = (out / REPORT_FILE).relative_to(ctx.data_dir).as_posix()
    stats["clean_summary"] = report["summary"]
    sha = _sha256(clean_file)
    name = f"{ctx.dataset.name} (clean)"[:200]

    def finalize(session: Session) -> dict[str, Any]:
        existing = session.scalars(select(Dataset).where(Dataset.content_sha256 == sha,
                                                         Dataset.kind == DatasetKind.text)).first()
        if existing is not None:
            return {}  # the same corpus is already a dataset (the same raw data cleaned again): not stored twice
        dataset = Dataset(name=name, kind=DatasetKind.text, format="jsonl",
                          path=clean_file.relative_to(ctx.data_dir).as_posix(), original_filename=DATASET_FILE,
                          size_bytes=clean_file.stat().st_size, stats=stats, owner_id=ctx.owner_id,
                          content_sha256=sha)
        session.add(dataset)
        session.flush()
        return {}

    return Outcome(summary=report["summary"], finalize=finalize)

