"""Datasets tab: upload a corpus, see why it was refused (file, line, problem) or what it holds.

Upload → `services.store_dataset_upload` validates the file (txt: documents separated by blank
lines; jsonl/csv/parquet: a "text" field/column) and stores it all-or-nothing. On success the
page shows the stats the service computed (documents, bytes, duplicates / empty documents
removed), the first documents and the document-length histogram; on failure the service's
message, which names the file, the line and the problem. Below, every stored dataset; pick one
to see the same summary again.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from web.ui import can_write, current_user, db_session, error_text
from web.ui.plots import (dataset_stat_cards, field, histogram_figure, human_bytes, message_html,
                          stat_cards_html)

KINDS = ["text", "chat", "preference", "prompts"]
TABLE_COLUMNS = ["id", "name", "kind", "format", "documents", "size", "file", "created"]
PREVIEW_COLUMNS = ["#", "characters", "text"]
FILE_TYPES = [".txt", ".jsonl", ".csv", ".parquet"]


# ----------------------------------------------------------------------------- pure shaping

def datasets_frame(datasets: list[dict]) -> pd.DataFrame:
    rows = []
    for d in datasets:
        stats = field(d, "stats") or {}
        created = field(d, "created_at")
        rows.append({
            "id": field(d, "id"),
            "name": field(d, "name"),
            "kind": field(d, "kind"),
            "format": field(d, "format"),
            "documents": stats.get("documents", ""),
            "size": human_bytes(field(d, "size_bytes")),
            "file": field(d, "original_filename"),
            "created": created.strftime("%Y-%m-%d %H:%M") if hasattr(created, "strftime") else str(created or ""),
        })
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def preview_frame(dataset: dict | None) -> pd.DataFrame:
    stats = (field(dataset, "stats") or {}) if dataset else {}
    docs = stats.get("preview") or []
    rows = [{"#": i + 1, "characters": len(text), "text": text} for i, text in enumerate(docs)]
    return pd.DataFrame(rows, columns=PREVIEW_COLUMNS)


def summary_outputs(dataset: dict | None) -> tuple[str, pd.DataFrame, Any]:
    """(stat cards HTML, preview frame, histogram figure) for one dataset."""
    if dataset is None:
        return "", preview_frame(None), None
    stats = field(dataset, "stats") or {}
    title = (f'<div style="margin:4px 0 6px 0;font-weight:600">Dataset #{field(dataset, "id")} · '
             f'{html.escape(str(field(dataset, "name")))} '
             f'<span style="opacity:.6;font-weight:400">({field(dataset, "kind")})</span></div>')
    cards = title + stat_cards_html(dataset_stat_cards(dataset))
    figure = histogram_figure(stats.get("length_histogram")) if stats.get("length_histogram") else None
    return cards, preview_frame(dataset), figure


# ----------------------------------------------------------------------------- the tab

@dataclass
class DatasetsTab:
    settings: Any
    table: gr.Dataframe
    summary: list  # [cards, preview, histogram]

    def wire(self, blocks: gr.Blocks, page: gr.Tab) -> None:
        # On page load the newest dataset's summary is shown, so the page is never a blank form.
        blocks.load(self.first_paint, None, [self.table] + self.summary, api_visibility="private")
        page.select(self.refresh, None, self.table, queue=False, api_visibility="private")

    def refresh(self) -> pd.DataFrame:
        from web import services

        with db_session(self.settings) as session:
            return datasets_frame(services.list_datasets(session=session))

    def first_paint(self):
        from web import services

        with db_session(self.settings) as session:
            datasets = services.list_datasets(session=session)
        return (datasets_frame(datasets), *summary_outputs(datasets[0] if datasets else None))


def build(settings) -> DatasetsTab:
    from web import services

    gr.Markdown("Upload a corpus. **txt**: documents separated by a blank line · **jsonl**: one JSON object "
                "per line with a `text` field · **csv / parquet**: a `text` column. The file is checked "
                "before anything is stored; duplicate and empty documents are dropped and counted.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            upload = gr.File(label="Corpus file", file_types=FILE_TYPES, type="filepath",
                             elem_id="ds-file", height=140)
            with gr.Row():
                name = gr.Textbox(label="Name", placeholder="defaults to the file name", elem_id="ds-name")
                kind = gr.Dropdown(KINDS, value="text", label="Kind", elem_id="ds-kind",
                                   info="text = pretraining corpus")
            submit = gr.Button("Upload and validate", variant="primary", elem_id="ds-upload")
            message = gr.HTML(elem_id="ds-message")
        with gr.Column(scale=3, min_width=420):
            cards = gr.HTML(elem_id="ds-stats")
            histogram = gr.Plot(label="Document lengths", elem_id="ds-histogram", show_label=False)
    preview = gr.Dataframe(value=preview_frame(None), headers=PREVIEW_COLUMNS, label="First documents",
                           interactive=False, wrap=True, elem_id="ds-preview", max_height=320,
                           column_widths=["6%", "12%", "82%"])
    gr.Markdown("### Datasets")
    table = gr.Dataframe(value=datasets_frame([]), headers=TABLE_COLUMNS, interactive=False,
                         elem_id="ds-table", max_height=360, label="Click a row to see its summary")

    def do_upload(path: str | None, name_value: str, kind_value: str, request: gr.Request):
        if not path:
            return (message_html("Choose a file first.", "error"), gr.skip(), gr.skip(), gr.skip(), gr.skip())
        user = current_user(settings, request)
        if not can_write(user):
            return (message_html(f"Your role ({user['role']}) cannot upload datasets.", "error"),
                    gr.skip(), gr.skip(), gr.skip(), gr.skip())
        original = Path(path).name  # Gradio keeps the uploaded file's base name in its temp dir
        try:
            with db_session(settings) as session:
                dataset = services.store_dataset_upload(session, settings, path, original, name_value or None,
                                                        kind_value or "text", user["id"] if user else None)
                info = services.get_dataset(dataset.id, session=session)
                datasets = services.list_datasets(session=session)
        except (ValueError, services.ServiceError) as error:
            # ServiceError (InvalidInput, UploadTooLarge, PermissionDenied) and CorpusError carry a
            # message naming the file, line and problem; nothing was stored.
            return (message_html(f"Not stored: {error_text(error)}", "error"), "", preview_frame(None), None,
                    gr.skip())
        stats = info.get("stats") or {}
        docs = stats.get("documents")
        text = f"Stored dataset #{info['id']} “{info['name']}”"
        if isinstance(docs, int):
            text += f": {docs:,} documents"
        c, p, h = summary_outputs(info)
        return message_html(text + ".", "ok"), c, p, h, datasets_frame(datasets)

    submit.click(do_upload, [upload, name, kind], [message, cards, preview, histogram, table],
                 concurrency_limit=2, api_visibility="private")

    def show_selected(frame: pd.DataFrame, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            dataset_id = int(frame.iloc[row]["id"])
        except (IndexError, KeyError, ValueError, TypeError):
            return gr.skip(), gr.skip(), gr.skip()
        try:
            with db_session(settings) as session:
                info = services.get_dataset(dataset_id, session=session)
        except services.ServiceError as error:
            return message_html(error_text(error), "error"), gr.skip(), gr.skip()
        return summary_outputs(info)

    table.select(show_selected, [table], [cards, preview, histogram], api_visibility="private")
    return DatasetsTab(settings=settings, table=table, summary=[cards, preview, histogram])
