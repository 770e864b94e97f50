"""The Models tab's comparison: pick models, see their evaluations side by side (the table `workbench evaluate`
prints, and bars with their standard errors) and their training loss curves laid over each other.

`web.services.compare.compare_models` gives the numbers; this module only lays them out and wires the panel.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from web.ui import current_user, db_session, error_text
from web.ui.plots import message_html

# Bars per kind of evaluation: (metric, its standard error or None, legend). A benchmark has acc and acc_norm;
# text data has bits per byte (comparable across tokenizers, unlike the loss per token).
BENCHMARK_BARS = (("acc", "acc_stderr", "acc"), ("acc_norm", "acc_norm_stderr", "acc_norm"))
TEXT_BARS = (("val_bpb", None, "bits per byte"),)
CURVE_STYLES = {"loss": "-", "val_loss": "--"}


def comparison_table_html(comparison: dict) -> str:
    headings, rows = comparison["table"]["headings"], comparison["table"]["rows"]
    if not rows:
        names = ", ".join(model["name"] for model in comparison["models"])
        return message_html(f"No evaluation of {names} yet: submit an evaluate job (Train tab) with these models "
                            "and a benchmark or text dataset.", "info") if names else ""
    head = "".join(f"<th>{html.escape(heading)}</th>" for heading in headings)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return (f'<table class="wb-table" id="models-compare-rows"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _bars_of(rows: list[dict]) -> tuple:
    return BENCHMARK_BARS if any("acc" in row for row in rows) else TEXT_BARS


def evaluation_figure(comparison: dict):
    """One panel per dataset: a group of bars per model (acc and acc_norm ± stderr, or bits per byte)."""
    evaluations = comparison["evaluations"]
    if not evaluations:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    datasets: dict[Any, list[dict]] = {}
    for row in evaluations:
        datasets.setdefault(row["dataset_id"], []).append(row)
    fig = Figure(figsize=(max(5.0, 3.2 * len(datasets)), 3.2), dpi=100, layout="constrained")
    for panel, rows in enumerate(datasets.values(), start=1):
        ax = fig.add_subplot(1, len(datasets), panel)
        bars = _bars_of(rows)
        width = 0.8 / len(bars)
        for index, (metric, error, legend) in enumerate(bars):
            positions = [model + (index - (len(bars) - 1) / 2) * width for model in range(len(rows))]
            values = [row.get(metric) or 0.0 for row in rows]
            errors = [row.get(error) or 0.0 for row in rows] if error else None
            ax.bar(positions, values, width, yerr=errors, capsize=3, label=legend)
        ax.set_xticks(range(len(rows)), [row["model"] for row in rows], rotation=20, ha="right", fontsize=8)
        ax.set_title(rows[0]["data"], fontsize=9)
        if bars is BENCHMARK_BARS:
            ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    return fig


def curves_figure(comparison: dict):
    """The training loss (solid) and validation loss (dashed) of each model's own run, on one chart."""
    curves = [curve for curve in comparison["curves"] if curve["series"]]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for index, curve in enumerate(curves):
        colour = f"C{index % 10}"
        for name, points in curve["series"].items():
            steps, values = zip(*points)
            ax.plot(steps, values, CURVE_STYLES.get(name, ":"), color=colour,
                    marker="o" if len(points) == 1 else None, label=f"{curve['model']} · {name.replace('_', ' ')}")
    ax.set_xlabel("step (of the run that made the model)")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    return fig


@dataclass
class CompareView:
    picker: gr.Dropdown


def build(settings) -> CompareView:
    """The comparison panel; the Models tab fills the picker's choices when it refreshes."""
    from web import services

    with gr.Accordion("Compare models", open=False, elem_id="models-compare-panel"):
        picker = gr.Dropdown(label="Models to compare", choices=[], multiselect=True, elem_id="models-compare-picker",
                             info="their newest evaluation on each dataset, and the loss curves of their runs")
        table = gr.HTML(elem_id="models-compare-table")
        bars = gr.Plot(elem_id="models-compare-bars", show_label=False)
        curves = gr.Plot(elem_id="models-compare-curves", show_label=False)

    def show(model_ids, request: gr.Request = None):
        try:
            with db_session(settings) as session:
                comparison = services.compare_models([int(i) for i in model_ids or []], session=session,
                                            viewer=current_user(settings, request))
        except (services.ServiceError, ValueError, TypeError) as error:
            return message_html(error_text(error), "error"), None, None
        return comparison_table_html(comparison), evaluation_figure(comparison), curves_figure(comparison)

    picker.change(show, [picker], [table, bars, curves], show_progress="hidden", api_visibility="private")
    return CompareView(picker=picker)
