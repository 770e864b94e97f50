"""What the `reward` kind shows: its cards and curves in the Jobs tab, the report-card rows of its reward model,
with what its run's reward_report.json (llm/reward.py) says about the held-out pairs: the scores of chosen and
rejected answers as two histograms over the same bins, and accuracy by prompt length and by which answer is
longer (a model that learned "longer wins" is right only where the chosen answer is the longer one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from worker.jobs.spec import LOSS_PLOT, SPEED_CARDS, TOKENS_ROW, VAL_LOSS_ROW, Plot, ReportRow

METRIC_CARDS = (("step", "step"), ("loss", "loss"), ("accuracy", "accuracy"), ("val_accuracy", "val accuracy"),
                ("margin", "margin")) + SPEED_CARDS
PLOTS = (LOSS_PLOT, Plot("Preference accuracy", {"accuracy": "train", "val_accuracy": "val"}))
REPORT_CARD = (VAL_LOSS_ROW, ReportRow("val_accuracy", "reward-model accuracy", "{:.1%}"), TOKENS_ROW)

HISTOGRAM_BINS = 16
BARS = "▁▂▃▄▅▆▇█"  # a bin's height, from its count over the largest bin's; an empty bin is "·"
LONGER = {"chosen": "the chosen answer is longer", "rejected": "the rejected answer is longer",
          "neither": "both answers are as long"}


def histograms(chosen: list[float], rejected: list[float], bins: int = HISTOGRAM_BINS
               ) -> tuple[list[float], list[int], list[int]]:
    """(bin edges, chosen counts, rejected counts): the same `bins` equal bins over the range of both."""
    low, high = min(chosen + rejected), max(chosen + rejected)
    width = (high - low) / bins or 1.0

    def counts(values: list[float]) -> list[int]:
        result = [0] * bins
        for value in values:
            result[min(int((value - low) / width), bins - 1)] += 1
        return result

    return [low + i * width for i in range(bins + 1)], counts(chosen), counts(rejected)


def bars(counts: list[int], largest: int) -> str:
    """Counts as a row of bar characters scaled to `largest` (a non-empty bin is never drawn as empty)."""
    return "".join("·" if count == 0 else BARS[max(0, round(count / largest * len(BARS)) - 1)] for count in counts)


def _bucket_order(name: str) -> int:
    found = re.search(r"\d+", name)
    return int(found.group()) if found else 0


def run_report(run_dir: Path) -> list[tuple[str, str]]:
    """Rows from the run's reward_report.json: the score histograms and the accuracy by length."""
    path = run_dir / "reward_report.json"
    if not path.is_file():
        return []
    report = json.loads(path.read_text())
    where = "held-out" if report.get("held_out") else "training"
    chosen, rejected = report.get("chosen_rewards") or [], report.get("rejected_rewards") or []
    rows = []
    if chosen and rejected:
        edges, chosen_counts, rejected_counts = histograms(chosen, rejected)
        largest = max(chosen_counts + rejected_counts)
        span = f"{len(edges) - 1} bins from {edges[0]:.2f} to {edges[-1]:.2f}"
        rows += [(f"{where} scores of chosen answers ({span})", bars(chosen_counts, largest)),
                 (f"{where} scores of rejected answers (same bins)", bars(rejected_counts, largest))]
    for bucket, summary in sorted((report.get("by_prompt_length") or {}).items(), key=lambda i: _bucket_order(i[0])):
        rows.append((f"accuracy, prompts of {bucket}", f"{summary['accuracy']:.1%} of {summary['pairs']:,} pairs"))
    for value, summary in (report.get("by_longer_answer") or {}).items():
        rows.append((f"accuracy where {LONGER.get(value, value)}",
                     f"{summary['accuracy']:.1%} of {summary['pairs']:,} pairs"))
    return rows
