"""The clean report of a dataset made by the `clean` job, in the Datasets tab: the funnel chart, the table of documents
in and out per step, and the removed and kept examples of each step with the reason each was removed
(llm/clean_report.py writes the report; the dataset's stats name it: `clean_report`, `cleaned_from`).

    build()                          the accordion's components, hidden until a cleaned dataset is shown
    report_outputs(dataset, data_dir) what they show for one dataset (hidden for any other)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from web.ui.plots import field

EXAMPLE_COLUMNS = ["step", "removed or kept", "reason", "url", "text"]


def load_report(dataset: Any, data_dir: Path | None) -> dict | None:
    """The report of a cleaned dataset, or None (not cleaned, or its file is gone)."""
    stats = (field(dataset, "stats") or {}) if dataset else {}
    relative = stats.get("clean_report")
    if not relative or data_dir is None:
        return None
    from db.settings import safe_join

    try:
        return json.loads(safe_join(data_dir, relative).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def funnel_figure(report: dict):
    """Documents left after each step, as horizontal bars (the top bar is what was read)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    funnel = report.get("funnel") or []
    fig = Figure(figsize=(7.0, 0.35 * len(funnel) + 1.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    names = [entry.get("title") or entry["step"] for entry in funnel][::-1]  # reports before titles: the step
    counts = [entry["documents"] for entry in funnel][::-1]
    bars = ax.barh(range(len(names)), counts, color="#6366f1")
    ax.set_yticks(range(len(names)), names)
    for bar, count in zip(bars, counts):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {count:,}", va="center", fontsize=8)
    ax.set_title("Documents left after each step", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def reason_choices(report: dict) -> list[tuple[str, str]]:
    """(label, value) for every step and reason with examples, the commonest first; "kept" entries after."""
    choices = []
    input_examples = report.get("input", {}).get("examples") or []
    for reason, count in sorted((report.get("input", {}).get("removed") or {}).items(), key=lambda item: -item[1]):
        if any(example["reason"] == reason for example in input_examples):
            choices.append((f"read: {reason} ({count:,} removed)", f"read|removed|{reason}"))
    for step in report.get("steps", []):
        for reason, count in step.get("removed", {}).items():
            choices.append((f"{step['step']}: {reason} ({count:,} removed)", f"{step['step']}|removed|{reason}"))
    choices.sort(key=lambda choice: -int(choice[0].rsplit("(", 1)[1].split()[0].replace(",", "")))
    for step in report.get("steps", []):
        if step.get("kept_examples"):
            choices.append((f"{step['step']}: kept", f"{step['step']}|kept|kept"))
    return choices


def examples_frame(report: dict | None, choice: str | None) -> pd.DataFrame:
    """The examples of one step and reason ("step|removed|reason" or "step|kept|kept")."""
    if not report or not choice:
        return pd.DataFrame(columns=EXAMPLE_COLUMNS)
    step_name, which, reason = choice.split("|", 2)
    if step_name == "read":
        examples = [e for e in report.get("input", {}).get("examples") or [] if e["reason"] == reason]
    else:
        step = next((s for s in report.get("steps", []) if s["step"] == step_name), {})
        pool = step.get("kept_examples" if which == "kept" else "removed_examples") or []
        examples = pool if which == "kept" else [e for e in pool if e["reason"] == reason]
    rows = [{"step": step_name, "removed or kept": which, "reason": example.get("reason", ""),
             "url": example.get("url") or example.get("source") or "", "text": example.get("text", "")[:1500]}
            for example in examples]
    return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)


@dataclass
class ReportView:
    box: gr.Accordion
    table: gr.Markdown
    funnel: gr.Plot
    reason: gr.Dropdown
    examples: gr.Dataframe
    report: gr.State

    @property
    def outputs(self) -> list:
        return [self.box, self.table, self.funnel, self.reason, self.examples, self.report]


def build() -> ReportView:
    with gr.Accordion("Clean report: what each step removed and why", open=True, visible=False,
                      elem_id="ds-clean-report") as box:
        with gr.Row(equal_height=False):
            table = gr.Markdown(elem_id="ds-clean-table")
            funnel = gr.Plot(show_label=False, elem_id="ds-clean-funnel")
        reason = gr.Dropdown(label="Examples of", choices=[], elem_id="ds-clean-reason",
                             info="removed documents of one step and reason, or the documents a step kept")
        examples = gr.Dataframe(headers=EXAMPLE_COLUMNS, value=pd.DataFrame(columns=EXAMPLE_COLUMNS),
                                interactive=False, wrap=True, max_height=360, elem_id="ds-clean-examples",
                                column_widths=["10%", "8%", "14%", "18%", "50%"])
    report = gr.State(None)
    view = ReportView(box, table, funnel, reason, examples, report)
    reason.change(examples_frame, [report, reason], [examples], api_visibility="private")
    return view


def report_outputs(dataset: Any, data_dir: Path | None) -> tuple:
    """(accordion, table, funnel, reason picker, examples, report state) for `dataset`."""
    from llm.clean_report import report_markdown

    report = load_report(dataset, data_dir)
    if report is None:
        return (gr.Accordion(visible=False), "", None, gr.Dropdown(choices=[], value=None),
                pd.DataFrame(columns=EXAMPLE_COLUMNS), None)
    stats = field(dataset, "stats") or {}
    source = stats.get("cleaned_from") or {}
    origin = (f"Cleaned from dataset #{source.get('dataset_id')} “{source.get('dataset_name')}” by job "
              f"#{source.get('job_id')}.\n\n" if source else "")
    choices = reason_choices(report)
    first = choices[0][1] if choices else None
    return (gr.Accordion(visible=True), origin + report_markdown(report), funnel_figure(report),
            gr.Dropdown(choices=choices, value=first), examples_frame(report, first), report)
