"""Datasets tab: upload a corpus, see why it was refused (file, line, problem) or what it holds.

Upload → `services.store_dataset_upload` validates the file (txt: documents separated by blank
lines; jsonl/csv/parquet: a "text" field/column) and stores it all-or-nothing. On success the
page shows the stats the service computed (documents, bytes, duplicates / empty documents
removed), the first documents and the document-length histogram; on failure the service's
message, which names the file, the line and the problem; a file already stored as a dataset of
that kind is not stored twice: the page says which dataset it is and shows it. Below, every stored
dataset (or, before the first upload, a note saying to upload one); pick one to see the same summary
again, rename it, or delete it after a confirmation that says what uses it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from db.models import DATASET_KIND_HELP, DatasetKind
from web.ui import can_write, current_user, db_session, error_text
from web.ui import clean_report_view
from llm.stats import COUNT_NAME
from web.ui.plots import (CONVERSATION_KINDS, dataset_stat_cards, field, histogram_figure, human_bytes,
                          message_html, stat_cards_html, token_histograms_figure)

KINDS = [kind.value for kind in DatasetKind]
TABLE_COLUMNS = ["id", "name", "kind", "format", "documents", "size", "file", "created"]
PREVIEW_COLUMNS = ["#", "characters", "text"]  # a conversation's text is its rendered chat template
FILE_TYPES = [".txt", ".jsonl", ".csv", ".parquet", ".html", ".htm", ".warc", ".gz"]  # the last four: raw web data


def kind_help(kind: DatasetKind) -> str:
    """One kind in the tab's introduction, from its entry in DATASET_KIND_HELP (db/models.py)."""
    purpose, files = DATASET_KIND_HELP.get(kind, ("", ""))
    return f"**{kind.value}** ({purpose}): {files}." if purpose else f"**{kind.value}**."


# Every DatasetKind is offered and explained, in the enum's order.
INTRO = ("Upload a dataset; the file is checked before anything is stored. "
         + " ".join(kind_help(kind) for kind in DatasetKind) + " Files must be UTF-8 text (or Parquet).")
KIND_INFO = ", ".join(f"{kind.value} = {DATASET_KIND_HELP[kind][0]}" for kind in DatasetKind if kind in DATASET_KIND_HELP)


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
            "documents": stats.get("documents", stats.get("items", "")),
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


EMPTY_NOTE = "No datasets yet — upload one above."


def empty_state(datasets: list[dict]) -> tuple[str, bool]:
    """(the note shown instead of a table, whether the table is shown) for the list of datasets."""
    if datasets:
        return "", True
    return message_html(EMPTY_NOTE, "info"), False


def dataset_choices(datasets: list[dict]) -> list[tuple[str, int]]:
    return [(f"#{field(d, 'id')} · {field(d, 'name')} ({field(d, 'kind')})", field(d, "id")) for d in datasets]


def upload_message(info: dict, already_stored: bool) -> tuple[str, str]:
    """(text, kind of notice) after an upload: stored, or already there as dataset #N."""
    if already_stored:
        return (f"This file is already dataset #{info['id']} “{info['name']}” ({info['kind']}); nothing new was "
                f"stored. It is selected below.", "info")
    stats = info.get("stats") or {}
    text = f"Stored dataset #{info['id']} “{info['name']}”"
    if isinstance(stats.get("documents"), int):
        text += f": {stats['documents']:,} documents"
    elif isinstance(stats.get("items"), int):
        text += f": {stats['items']:,} {COUNT_NAME[stats['kind']]}"
    return text + ".", "ok"


def delete_confirmation(dataset: dict, blocking: list[str], kept: list[str]) -> tuple[str, bool]:
    """(what the confirmation says, whether deleting is possible now) for a dataset."""
    title = f"dataset #{field(dataset, 'id')} “{field(dataset, 'name')}”"
    if blocking:
        return (f"The {title} cannot be deleted while these jobs use it; cancel them or wait until they "
                f"finish:\n• " + "\n• ".join(blocking)), False
    text = f"Delete the {title}? Its file and prepared token data are removed for good."
    if kept:
        text += "\nWhat used it stays:\n• " + "\n• ".join(kept)
    else:
        text += " Nothing uses it."
    return text, True


def summary_outputs(dataset: dict | None) -> tuple[str, pd.DataFrame, Any]:
    """(stat cards HTML, preview frame, histogram figure) for one dataset."""
    if dataset is None:
        return "", preview_frame(None), None
    stats = field(dataset, "stats") or {}
    title = (f'<div style="margin:4px 0 6px 0;font-weight:600">Dataset #{field(dataset, "id")} · '
             f'{html.escape(str(field(dataset, "name")))} '
             f'<span style="opacity:.6;font-weight:400">({field(dataset, "kind")})</span></div>')
    cards = title + stat_cards_html(dataset_stat_cards(dataset))
    if stats.get("kind") in CONVERSATION_KINDS:
        figure = token_histograms_figure(stats)
    else:
        figure = histogram_figure(stats.get("length_histogram")) if stats.get("length_histogram") else None
    return cards, preview_frame(dataset), figure


# ----------------------------------------------------------------------------- the tab

@dataclass
class DatasetsTab:
    settings: Any
    listing: list  # [table, empty note, picker]
    summary: list  # [cards, preview, histogram]

    def wire(self, blocks: gr.Blocks, page: gr.Tab) -> None:
        # On page load the newest dataset's summary is shown, so the page is never a blank form.
        blocks.load(self.first_paint, None, self.listing + self.summary, api_visibility="private")
        page.select(self.refresh, self.listing[2:], self.listing, queue=False, api_visibility="private")

    def refresh(self, keep: Any = None, request: gr.Request = None) -> tuple:
        from web import services

        if not may_read(self.settings, request):
            return listing_outputs([], None)
        with db_session(self.settings) as session:
            return listing_outputs(services.list_datasets(session=session), keep)

    def first_paint(self, request: gr.Request = None):
        from web import services

        if not may_read(self.settings, request):  # a labeler: the tab is hidden and shows nothing
            return (*listing_outputs([], None), *summary_outputs(None))
        with db_session(self.settings) as session:
            datasets = services.list_datasets(session=session)
        newest = datasets[0] if datasets else None
        return (*listing_outputs(datasets, field(newest, "id") if newest else None), *summary_outputs(newest))


def may_read(settings, request: gr.Request | None) -> bool:
    """Whether the person asking may see datasets (the training team; never labelers)."""
    from web.services import Action, can

    return can(current_user(settings, request), Action.read_training)


def listing_outputs(datasets: list[dict], keep: Any = None) -> tuple:
    """(table, empty note, picker) for the list of datasets; the picker keeps `keep` while it exists."""
    note, has_rows = empty_state(datasets)
    choices = dataset_choices(datasets)
    ids = [value for _, value in choices]
    return (gr.Dataframe(value=datasets_frame(datasets), visible=has_rows), note,
            gr.Dropdown(choices=choices, value=keep if keep in ids else None))


def build(settings) -> DatasetsTab:
    from web import services

    gr.Markdown(INTRO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            upload = gr.File(label="Dataset file", file_types=FILE_TYPES, type="filepath",
                             elem_id="ds-file", height=140)
            with gr.Row():
                name = gr.Textbox(label="Name", placeholder="defaults to the file name", elem_id="ds-name",
                                  max_length=200)
                kind = gr.Dropdown(KINDS, value=DatasetKind.text.value, label="Kind", elem_id="ds-kind",
                                   info=KIND_INFO)
            submit = gr.Button("Upload and validate", variant="primary", elem_id="ds-upload")
            message = gr.HTML(elem_id="ds-message")
        with gr.Column(scale=3, min_width=420):
            cards = gr.HTML(elem_id="ds-stats")
            histogram = gr.Plot(label="Document lengths", elem_id="ds-histogram", show_label=False)
    preview = gr.Dataframe(value=preview_frame(None), headers=PREVIEW_COLUMNS, label="First documents",
                           interactive=False, wrap=True, elem_id="ds-preview", max_height=320,
                           column_widths=["6%", "12%", "82%"])
    gr.Markdown("### Datasets")
    empty_note = gr.HTML(message_html(EMPTY_NOTE, "info"), elem_id="ds-empty")
    table = gr.Dataframe(value=datasets_frame([]), headers=TABLE_COLUMNS, interactive=False, visible=False,
                         elem_id="ds-table", max_height=360, label="Click a row to see its summary")
    with gr.Row(equal_height=True):
        picker = gr.Dropdown(label="Dataset", choices=[], elem_id="ds-picker", scale=3)
        new_name = gr.Textbox(label="New name", elem_id="ds-new-name", scale=3, max_length=200)
        rename = gr.Button("Rename", elem_id="ds-rename", scale=1)
        remove = gr.Button("Delete dataset…", variant="stop", elem_id="ds-delete", scale=1)
    with gr.Group(visible=False, elem_id="ds-delete-confirm") as confirm_box:
        confirm_text = gr.HTML(elem_id="ds-delete-text")
        with gr.Row():
            confirm_yes = gr.Button("Delete it", variant="stop", elem_id="ds-delete-yes")
            confirm_no = gr.Button("Keep it", elem_id="ds-delete-no")
    change_message = gr.HTML(elem_id="ds-change-message")
    listing = [table, empty_note, picker]
    summary = [cards, preview, histogram]

    def refreshed(keep: Any = None) -> tuple:
        with db_session(settings) as session:
            return listing_outputs(services.list_datasets(session=session), keep)

    def do_upload(path: str | None, name_value: str, kind_value: str, request: gr.Request):
        unchanged = (gr.skip(),) * (len(summary) + len(listing))
        if not path:
            return (message_html("Choose a file first.", "error"), *unchanged)
        user = current_user(settings, request)
        if not can_write(user):
            return (message_html(f"Your role ({user['role']}) cannot upload datasets.", "error"), *unchanged)
        original = Path(path).name  # Gradio keeps the uploaded file's base name in its temp dir
        try:
            with db_session(settings) as session:
                stored = services.store_dataset_upload(session, settings, path, original, name_value or None,
                                                       kind_value or "text", user["id"] if user else None)
                info = services.get_dataset(stored.dataset.id, session=session)
        except (ValueError, services.ServiceError) as error:
            # ServiceError (InvalidInput, UploadTooLarge, PermissionDenied) and CorpusError carry a
            # message naming the file, line and problem; nothing was stored.
            return (message_html(f"Not stored: {error_text(error)}", "error"), "", preview_frame(None), None,
                    *(gr.skip(),) * len(listing))
        text, notice = upload_message(info, stored.already_stored)
        said = message_html(text, notice) + (message_html(f"Stored as text, but {stored.note}.", "warn")
                                             if stored.note else "")
        return (said, *summary_outputs(info), *refreshed(keep=info["id"]))

    submit.click(do_upload, [upload, name, kind], [message, *summary, *listing],
                 concurrency_limit=2, api_visibility="private")

    def show(dataset_id, request: gr.Request = None):
        if not dataset_id or not may_read(settings, request):
            return summary_outputs(None)
        try:
            with db_session(settings) as session:
                return summary_outputs(services.get_dataset(int(dataset_id), session=session))
        except (services.ServiceError, ValueError, TypeError):
            return summary_outputs(None)  # deleted meanwhile

    def select_row(frame: pd.DataFrame, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return int(frame.iloc[row]["id"])
        except (IndexError, KeyError, ValueError, TypeError):
            return gr.skip()

    table.select(select_row, [table], [picker], api_visibility="private")
    picker.change(show, [picker], summary, api_visibility="private")

    # A dataset the clean job made shows its report below (web/ui/clean_report_view.py).
    report_view = clean_report_view.build()

    def show_report(dataset_id, request: gr.Request = None):
        if not dataset_id or not may_read(settings, request):
            return clean_report_view.report_outputs(None, None)
        try:
            with db_session(settings) as session:
                dataset = services.get_dataset(int(dataset_id), session=session)
        except (services.ServiceError, ValueError, TypeError):
            dataset = None
        return clean_report_view.report_outputs(dataset, settings.data_dir)

    picker.change(show_report, [picker], report_view.outputs, api_visibility="private")

    def do_rename(dataset_id, name_value, request: gr.Request):
        user = current_user(settings, request)
        if not dataset_id:
            return (message_html("Choose a dataset first.", "error"), *(gr.skip(),) * len(listing))
        try:
            with db_session(settings) as session:
                info = services.rename_dataset(session, int(dataset_id), name_value, user["id"] if user else None)
            text = message_html(f"Dataset #{info['id']} is now called “{info['name']}”.", "ok")
        except (services.ServiceError, ValueError, TypeError) as error:
            text = message_html(f"Not renamed — {error_text(error)}", "error")
        return (text, *refreshed(keep=dataset_id))

    rename.click(do_rename, [picker, new_name], [change_message, *listing], api_visibility="private")

    def ask_delete(dataset_id):
        """Open the confirmation, saying what uses the dataset (jobs, prompts)."""
        if not dataset_id:
            return gr.Group(visible=False), "", gr.Button(), message_html("Choose a dataset first.", "error")
        try:
            with db_session(settings) as session:
                info = services.get_dataset(int(dataset_id), session=session)
                dependents = services.dataset_dependents(session, int(dataset_id))
        except (services.ServiceError, ValueError, TypeError) as error:
            return gr.Group(visible=False), "", gr.Button(), message_html(error_text(error), "error")
        text, possible = delete_confirmation(info, dependents.blocking, dependents.kept)
        return (gr.Group(visible=True), message_html(text, "warn" if possible else "error"),
                gr.Button(interactive=possible), "")

    def do_delete(dataset_id, request: gr.Request):
        user = current_user(settings, request)
        try:
            with db_session(settings) as session:
                services.delete_dataset(session, settings, int(dataset_id), user["id"] if user else None)
            text = message_html(f"Dataset #{dataset_id} deleted.", "ok")
        except (services.ServiceError, ValueError, TypeError) as error:
            text = message_html(f"Not deleted — {error_text(error)}", "error")
        return (gr.Group(visible=False), text, *refreshed())

    remove.click(ask_delete, [picker], [confirm_box, confirm_text, confirm_yes, change_message],
                 api_visibility="private")
    confirm_yes.click(do_delete, [picker], [confirm_box, change_message, *listing], api_visibility="private")
    confirm_no.click(lambda: gr.Group(visible=False), None, [confirm_box], queue=False, api_visibility="private")
    return DatasetsTab(settings=settings, listing=listing, summary=summary)
