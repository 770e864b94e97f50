"""Label ▸ Chat thumbs: the 👍 / 👎 people gave answers in the Chat tab, per model, and their export.

A table per model (good, bad, how many people, when the last one was given) and "Export TRL JSONL": the thumbs in
TRL's unpaired format (prompt / completion / label), which `KTOTrainer` reads as it is and the Datasets tab takes
back as a feedback dataset. Train ▸ KTO trains on the thumbs directly; the export is for other tools and for
keeping. For the training team only: thumbs name their models and their people (`web.services.feedback` checks
Action.read_training whatever this page shows).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from web.ui import current_user, error_text
from web.ui.plots import message_html

COLUMNS = ["model", "👍 good", "👎 bad", "people", "last given"]
ALL = 0  # the model picker's "every model" choice
EXPORT_NAME = "chat-thumbs.jsonl"  # "chat-thumbs-model-<id>.jsonl" for one model


def counts_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([[row["model"], row["good"], row["bad"], row["people"],
                          f"{row['last']:%Y-%m-%d %H:%M}" if row["last"] else "—"] for row in rows], columns=COLUMNS)


@dataclass
class ThumbsView:
    settings: Any
    counts: gr.Dataframe
    picker: gr.Dropdown
    message: gr.HTML

    @property
    def refresh_outputs(self) -> list:
        return [self.counts, self.picker, self.message]

    def refresh(self, request: gr.Request | None = None):
        """(table, model choices, message): everyone's thumbs per model, now."""
        from web.services import ServiceError, feedback

        try:
            rows = feedback.feedback_counts(current_user(self.settings, request))
        except ServiceError as error:
            return counts_frame([]), gr.Dropdown(choices=[("every model", ALL)], value=ALL), \
                message_html(error_text(error), "error")
        choices = [("every model", ALL)] + [(f"{row['model']} (#{row['model_id']})", row["model_id"]) for row in rows]
        total = sum(row["good"] + row["bad"] for row in rows)
        said = f"{total} thumb{'s' if total != 1 else ''} on {len(rows)} model{'s' if len(rows) != 1 else ''}." \
            if total else "No thumbs yet: people give them under each answer in the Chat tab."
        return counts_frame(rows), gr.Dropdown(choices=choices, value=ALL), message_html(said, "info")

    def export(self, model_id: int | None, request: gr.Request | None = None):
        """(file, message): the export written to a fresh temporary folder (Gradio serves files from there)."""
        from web.services import ServiceError, feedback

        try:
            body = feedback.export_feedback(current_user(self.settings, request),
                                            model_ids=[int(model_id)] if model_id else None)
        except ServiceError as error:
            return gr.File(visible=False), message_html(error_text(error), "error")
        if not body:
            return gr.File(visible=False), message_html("No thumbs to export.", "error")
        name = EXPORT_NAME if not model_id else EXPORT_NAME.replace(".jsonl", f"-model-{int(model_id)}.jsonl")
        path = Path(tempfile.mkdtemp(prefix="workbench-thumbs-")) / name
        path.write_text(body, encoding="utf-8")
        lines = body.count("\n")
        return gr.File(value=str(path), visible=True), message_html(
            f"{lines} thumb{'s' if lines != 1 else ''} in {path.name} (TRL's unpaired format).", "ok")

    def wire(self, page: gr.Tab) -> None:
        """Opening the sub-tab counts the thumbs given meanwhile."""
        page.select(self.refresh, None, self.refresh_outputs, show_progress="hidden", api_visibility="private")


def build(settings) -> ThumbsView:
    gr.Markdown("The 👍 / 👎 people gave answers in the Chat tab, per model. **Train ▸ KTO** trains on them (an "
                "answer marked good or bad is one example); the export is TRL's unpaired format, for other tools or "
                "to upload again as a feedback dataset.")
    message = gr.HTML(elem_id="thumbs-message")
    counts = gr.Dataframe(counts_frame([]), label="Thumbs per model", interactive=False, elem_id="thumbs-counts")
    with gr.Row(equal_height=True):
        picker = gr.Dropdown(label="Export the thumbs of", choices=[("every model", ALL)], value=ALL, scale=3,
                             elem_id="thumbs-model")
        refresh = gr.Button("Refresh", size="sm", scale=1, elem_id="thumbs-refresh")
        export = gr.Button("Export TRL JSONL", size="sm", scale=1, elem_id="thumbs-export")
    download = gr.File(label="Download", visible=False, elem_id="thumbs-file")
    view = ThumbsView(settings=settings, counts=counts, picker=picker, message=message)
    private = {"api_visibility": "private"}
    refresh.click(view.refresh, None, view.refresh_outputs, **private)
    export.click(view.export, [picker], [download, message], **private)
    return view
