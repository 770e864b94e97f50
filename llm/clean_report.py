"""The report of a `clean` run (`llm.clean`): what each step received, removed and passed on, and why.

Built from what datatrove leaves behind: each task's stats file (work/logs/<stage>/stats/NNNNN.json, which holds
every step's counters: a filter's `dropped_<reason>`, our `Meter`'s documents and bytes), the exclusion writers'
files (work/removed/<step>/, the removed examples with their `filter_reason`) and our kept samples (work/kept/).
Stored as report.json next to the clean dataset:

    input        documents and bytes read, what reading removed (too long, malformed line, binary file, ...) and
                 each file's count or problem
    steps        per step: documents and bytes in and out, removed by reason, removed and kept examples
    funnel       documents and bytes left after each step (the chart)
    top_reasons  the ten commonest reasons across every step
    output       the clean dataset's documents and bytes; summary: one sentence; timings: seconds per stage
"""

from __future__ import annotations

import json
from pathlib import Path

from llm.clean_config import STEPS, CleanConfig
from llm.clean_inputs import InputSummary

MAX_LINES_SCANNED = 20_000  # removed documents read per step to find examples of each reason
STAGES = ("filter", "signatures", "buckets", "clusters", "finish")
REASON_OF_STEP = {"minhash": "near-duplicate", "extract": "no main text"}


def _total(value) -> float:
    if isinstance(value, dict):
        return float(value.get("total", value.get("sum", 0)) or 0)
    return float(value or 0)


def _stage_stats(logs: Path) -> dict[str, dict]:
    """Per step: documents/bytes out (its Meter) and removed counts by reason (the block before the Meter)."""
    steps: dict[str, dict] = {}
    for stage in STAGES:
        for path in sorted((logs / stage / "stats").glob("*.json")):
            entries = json.loads(path.read_text())
            for index, entry in enumerate(entries):
                name = entry.get("name", "")
                if "METER" not in name:
                    continue
                step = name.split(": ", 1)[-1]
                record = steps.setdefault(step, {"documents_out": 0, "bytes_out": 0, "removed": {}, "changed": 0})
                stats = entry.get("stats", {})
                record["documents_out"] += int(_total(stats.get("documents")))
                record["bytes_out"] += int(_total(stats.get("bytes")))
                if index == 0:
                    continue
                block = entries[index - 1].get("stats", {})
                reasons = {key.removeprefix("dropped_"): int(_total(value)) for key, value in block.items()
                           if key.startswith("dropped_")}
                dropped = int(_total(block.get("dropped")))
                if dropped > sum(reasons.values()):
                    reason = REASON_OF_STEP.get(step, "removed")
                    reasons[reason] = reasons.get(reason, 0) + dropped - sum(reasons.values())
                for reason, count in reasons.items():
                    record["removed"][reason] = record["removed"].get(reason, 0) + count
                record["changed"] += int(_total(block.get("documents_changed")))
    return steps


def _examples(folder: Path, limit: int, default_reason: str) -> list[dict]:
    """Up to `limit` documents per reason from a step's exclusion (or kept-sample) files."""
    found: list[dict] = []
    per_reason: dict[str, int] = {}
    scanned = 0
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else ():
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                scanned += 1
                if scanned > MAX_LINES_SCANNED:
                    return found
                record = json.loads(line)
                metadata = record.get("metadata") or {}
                reason = metadata.get("filter_reason") or default_reason
                if per_reason.get(reason, 0) >= limit:
                    continue
                per_reason[reason] = per_reason.get(reason, 0) + 1
                example = {"reason": reason, "id": record.get("id"), "text": (record.get("text") or "")[:2000],
                           "url": record.get("url") or metadata.get("url")}
                if "language" in metadata:
                    example["language"] = f"{metadata['language']} {metadata.get('language_score', 0):.2f}"
                found.append(example)
    return found


def build_report(out_dir: Path, config: CleanConfig, summary: InputSummary, *, workers: int,
                 timings: dict[str, float], output: dict) -> dict:
    work = Path(out_dir) / "work"
    counted = _stage_stats(work / "logs")
    start = counted.get("input", {"documents_out": summary.kept, "bytes_out": summary.kept_bytes})
    documents, size = start["documents_out"], start["bytes_out"]
    steps = []
    funnel = [{"step": "read", "title": "Documents read", "documents": summary.documents, "bytes": summary.bytes},
              {"step": "readable", "title": "Readable (not malformed)", "documents": documents, "bytes": size}]
    for switch, name, title in STEPS:
        enabled = config.step_enabled(switch)
        record = counted.get(name)
        entry = {"step": name, "title": title, "enabled": enabled, "documents_in": documents, "bytes_in": size}
        if not enabled or record is None:
            entry.update(documents_out=documents, bytes_out=size, removed={}, removed_examples=[],
                         kept_examples=[], ran=False)
            steps.append(entry)
            continue
        entry.update(documents_out=record["documents_out"], bytes_out=record["bytes_out"],
                     removed=dict(sorted(record["removed"].items(), key=lambda item: -item[1])), ran=True,
                     removed_examples=_examples(work / "removed" / name, config.examples_per_reason,
                                                REASON_OF_STEP.get(name, "removed")),
                     kept_examples=_examples(work / "kept" / name, config.examples_per_reason, "kept"))
        if name == "pii":
            entry["documents_changed"] = record["changed"]
        documents, size = record["documents_out"], record["bytes_out"]
        funnel.append({"step": name, "title": title, "documents": documents, "bytes": size})
        steps.append(entry)
    reasons = [{"step": "read", "reason": reason, "documents": count} for reason, count in summary.removed.items()]
    reasons += [{"step": entry["step"], "reason": reason, "documents": count}
                for entry in steps for reason, count in entry["removed"].items()]
    reasons.sort(key=lambda item: -item["documents"])
    top = reasons[0] if reasons else None
    text = (f"{summary.documents:,} documents in ({summary.bytes / 1e6:,.2f} MB) → {output['documents']:,} out "
            f"({output['bytes'] / 1e6:,.2f} MB)")
    if top:
        text += f"; most removed by {top['step']}: {top['reason']} ({top['documents']:,})"
    return {"summary": text, "input": summary.to_dict() | {"examples": summary.examples}, "steps": steps,
            "funnel": funnel, "top_reasons": reasons[:10], "output": output, "workers": workers,
            "timings": {name: round(seconds, 2) for name, seconds in timings.items()}}


def report_markdown(report: dict) -> str:
    """The report as a Markdown page: the summary, the funnel table and the top reasons."""
    lines = [f"**{report['summary']}**", "", "| step | documents in | removed | documents out | MB out |",
             "| --- | ---: | ---: | ---: | ---: |"]
    source = report["input"]
    lines.append(f"| read | {source['documents']:,} | {source['documents'] - source['kept']:,} | {source['kept']:,} "
                 f"| {source['kept_bytes'] / 1e6:,.2f} |")
    for step in report["steps"]:
        if not step["ran"]:
            lines.append(f"| {step['title']} | – | off | – | – |")
            continue
        removed = step["documents_in"] - step["documents_out"]
        extra = f" ({step['documents_changed']:,} changed)" if "documents_changed" in step else ""
        lines.append(f"| {step['title']} | {step['documents_in']:,} | {removed:,}{extra} | {step['documents_out']:,} "
                     f"| {step['bytes_out'] / 1e6:,.2f} |")
    if report["top_reasons"]:
        lines += ["", "Top reasons for removal:", ""]
        lines += [f"- {item['step']}: {item['reason']} — {item['documents']:,}" for item in report["top_reasons"]]
    problems = [f"- {item['name']}: {item['problem']}" for item in source.get("files", []) if item.get("problem")]
    if problems:
        lines += ["", "Input files with a problem:", ""] + problems
    return "\n".join(lines)
