"""Models tab: every model with its kind, parent and size; its report card and lineage graph (the data,
labels, votes and jobs that made it, and what was made from it); download as a zip; rename or delete (its
owner or an admin, after a confirmation naming what depends on it); several models compared side by side
(`compare_view`: their evaluations and loss curves); admins import GPT-2.

Downloads are built by `services.model_zip` (Hugging Face-format files: a transformers GPT-2 directory
for a full model, peft's files for an adapter). Importing reads only sub-directories of the configured
import directory (`WORKBENCH_IMPORT_DIR`), listed for the admin to pick: no path is ever typed.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from web.ui import compare_view, current_user, db_session, error_text
from web.services.lineage import model_lineage, report_card
from web.ui.lineage_view import lineage_figure, lineage_html
from web.ui.plots import human_bytes, message_html, stat_cards_html

# Zips handed to the browser are copied into Gradio's cache; ours are removed once they are this old.
DOWNLOAD_TTL_S = 3600
NO_MODELS = "No models yet — train one in Train (Pretrain), or an admin imports GPT-2 below."
KIND_COLOURS = {"base": "#64748b", "sft": "#4f46e5", "reward": "#0d9488", "dpo": "#c026d3"}


def models_table_html(models: list[dict]) -> str:
    if not models:
        return message_html(NO_MODELS, "info")
    rows = []
    for m in models:
        colour = KIND_COLOURS.get(m["kind"], "#64748b")
        parent = (f'#{m["parent_model_id"]} {html.escape(m.get("parent_name") or "")}'
                  if m.get("parent_model_id") else "—")
        config = m.get("config") or {}
        shape = (f'{config.get("n_layer", "?")} layers × {config.get("n_embd", "?")}' if config else "")
        architecture = "LoRA adapter" if m.get("architecture") == "lora_adapter" else m.get("architecture", "")
        rows.append(
            f'<tr data-model="{m["id"]}"><td>#{m["id"]}</td><td><b>{html.escape(m["name"])}</b></td>'
            f'<td><span style="color:{colour};font-weight:600">{html.escape(m["kind"])}</span></td>'
            f'<td>{parent}</td><td>{html.escape(architecture)}</td><td>{html.escape(shape)}</td>'
            f'<td>{html.escape(m["tokenizer"])}</td><td style="text-align:right">{human_bytes(m.get("size_bytes"))}</td>'
            f'<td>{"job #" + str(m["job_id"]) if m.get("job_id") else "imported"}</td></tr>')
    head = "".join(f"<th>{h}</th>" for h in ("id", "name", "kind", "parent", "format", "shape", "tokenizer", "size",
                                              "made by"))
    return ('<table class="wb-models" style="width:100%;border-collapse:collapse;font-size:14px">'
            f'<thead><tr style="text-align:left">{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def delete_confirmation(model: dict, dependents: list[str]) -> tuple[str, bool]:
    """(what the confirmation says, whether deleting is possible now) for a model."""
    title = f"model #{model['id']} ({model['name']})"
    if dependents:
        return (f"{title} cannot be deleted yet. These depend on it; delete them first:\n• "
                + "\n• ".join(dependents)), False
    return f"Delete {title}? Its files are removed for good. Nothing depends on it.", True


def _remove_old_downloads(directory: Path) -> None:
    cutoff = time.time() - DOWNLOAD_TTL_S
    for path in directory.glob("*.zip"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


@dataclass
class ModelsTab:
    settings: Any
    refresh_fn: Any
    outputs: list

    def wire(self, blocks: gr.Blocks, page: gr.Tab) -> None:
        for event in (blocks.load, page.select):
            event(self.refresh_fn, None, self.outputs, show_progress="hidden", api_visibility="private")


def build(settings) -> ModelsTab:
    from web import services

    gr.Markdown("Every model: pretrained, imported, fine-tuned. An SFT model trained with LoRA is an adapter "
                "that loads onto its parent. Download any model as Hugging Face-format files.")
    table = gr.HTML(models_table_html([]), elem_id="models-table")
    with gr.Row():
        picker = gr.Dropdown(label="Model", choices=[], elem_id="models-picker", scale=3)
        download = gr.Button("Download zip", elem_id="models-download", scale=1)
    download_file = gr.File(label="Download", visible=False, elem_id="models-file")
    download_message = gr.HTML()
    with gr.Row(equal_height=True):
        name_box = gr.Textbox(label="New name", elem_id="models-name", scale=3, max_length=200)
        rename = gr.Button("Rename", elem_id="models-rename", scale=1)
        remove = gr.Button("Delete model…", variant="stop", elem_id="models-delete", scale=1)
    with gr.Group(visible=False, elem_id="models-delete-confirm") as confirm_box:
        confirm_text = gr.HTML(elem_id="models-delete-text")
        with gr.Row():
            confirm_yes = gr.Button("Delete it", variant="stop", elem_id="models-delete-yes")
            confirm_no = gr.Button("Keep it", elem_id="models-delete-no")
    change_message = gr.HTML(elem_id="models-change-message")
    with gr.Accordion("Report card and lineage", open=True, elem_id="models-lineage-panel"):
        card = gr.HTML(elem_id="models-card")
        lineage = gr.Plot(elem_id="models-lineage", show_label=False)
        lineage_text = gr.HTML(elem_id="models-lineage-text")
    compare = compare_view.build(settings)
    with gr.Accordion("Import a Hugging Face GPT-2 (admins)", open=False, visible=False,
                      elem_id="models-import") as import_panel:
        gr.Markdown(f"Put a GPT-2 directory (`config.json` + `model.safetensors`) in the import directory "
                    f"(`WORKBENCH_IMPORT_DIR`, here `{settings.models_import_dir}`); it is listed below.")
        with gr.Row():
            source = gr.Dropdown(label="Directory", choices=[], elem_id="models-import-source", scale=2)
            new_name = gr.Textbox(label="Name (optional)", elem_id="models-import-name", scale=2)
            do_import = gr.Button("Import", variant="primary", elem_id="models-import-button", scale=1)
        import_message = gr.HTML()

    def refresh(request: gr.Request = None):
        return refreshed(request)

    def refreshed(request: gr.Request | None, keep: Any = None) -> tuple:
        """The table, the picker (keeping `keep` selected while it exists), the import panel for admins."""
        user = current_user(settings, request)
        if not services.can(user, services.Action.read_training):
            return tuple(gr.skip() for _ in outputs)  # a labeler: the tab is hidden
        with db_session(settings) as session:
            models = services.list_models_with_sizes(settings, session=session)
        choices = [(f"#{m['id']} · {m['name']} ({m['kind']})", m["id"]) for m in models]
        ids = [value for _, value in choices]
        admin = services.can(user, services.Action.manage_models)
        sources = services.importable_models(settings) if admin else []
        return (models_table_html(models), gr.Dropdown(choices=choices, value=keep if keep in ids else
                                                       (ids[0] if ids else None)),
                gr.Accordion(visible=admin), gr.Dropdown(choices=sources, value=sources[0] if sources else None),
                gr.Dropdown(choices=choices))

    outputs = [table, picker, import_panel, source, compare.picker]

    def make_zip(model_id):
        if not model_id:
            return gr.File(visible=False), message_html("Choose a model first.", "error")
        try:
            with db_session(settings) as session:
                archive, filename = services.model_zip(settings, int(model_id), session=session)
        except (services.ServiceError, ValueError, OSError) as error:
            return gr.File(visible=False), message_html(error_text(error), "error")
        downloads = archive.parent / "downloads"
        downloads.mkdir(exist_ok=True)
        _remove_old_downloads(downloads)
        named = downloads / filename
        archive.replace(named)  # the browser saves the file under this name
        return gr.File(value=str(named), visible=True), ""

    download.click(make_zip, [picker], [download_file, download_message], api_visibility="private")

    def import_from(directory, name, request: gr.Request):
        user = current_user(settings, request)
        try:
            with db_session(settings) as session:
                model = services.import_model(session, settings, directory or "", name, user["name"] if user else None)
                message = message_html(f"Imported as model #{model.id} ({model.name}).", "ok")
        except (services.ServiceError, ValueError, OSError) as error:
            message = message_html(f"Not imported — {error_text(error)}", "error")
        return (message, *refresh(request))

    do_import.click(import_from, [source, new_name], [import_message, *outputs], api_visibility="private")

    def do_rename(model_id, name, request: gr.Request):
        user = current_user(settings, request)
        try:
            with db_session(settings) as session:
                model = services.rename_model(session, int(model_id), name, user["name"] if user else None)
            message = message_html(f"Model #{model['id']} is now called {model['name']}.", "ok")
        except (services.ServiceError, ValueError, TypeError) as error:
            message = message_html(f"Not renamed — {error_text(error)}", "error")
        return (message, *refreshed(request, keep=model_id))

    rename.click(do_rename, [picker, name_box], [change_message, *outputs], api_visibility="private")

    def ask_delete(model_id, request: gr.Request):
        """Open the confirmation, saying what depends on the model (children, adapters, jobs, answers)."""
        try:
            with db_session(settings) as session:
                model = services.get_model(int(model_id), session=session)
                dependents = services.model_dependents(settings, session, int(model_id))
        except (services.ServiceError, ValueError, TypeError) as error:
            return gr.Group(visible=False), "", gr.Button(), message_html(error_text(error), "error")
        text, possible = delete_confirmation(model, dependents)
        return (gr.Group(visible=True), message_html(text, "warn" if possible else "error"),
                gr.Button(interactive=possible), "")

    def do_delete(model_id, request: gr.Request):
        user = current_user(settings, request)
        try:
            with db_session(settings) as session:
                services.delete_model(session, settings, int(model_id), user["name"] if user else None)
            message = message_html(f"Model #{model_id} deleted.", "ok")
        except (services.ServiceError, ValueError, TypeError) as error:
            message = message_html(f"Not deleted — {error_text(error)}", "error")
        return (gr.Group(visible=False), message, *refresh(request))

    def show_model(model_id):
        """The report card (what its runs measured) and the lineage graph of the chosen model."""
        if not model_id:
            return "", None, ""
        try:
            with db_session(settings) as session:
                rows = report_card(settings, int(model_id), session=session)
                graph = model_lineage(settings, int(model_id), session=session)
        except (services.ServiceError, ValueError, TypeError) as error:
            return message_html(error_text(error), "error"), None, ""
        return (stat_cards_html([(label, value) for label, value in rows]), lineage_figure(graph),
                lineage_html(graph))

    picker.change(show_model, [picker], [card, lineage, lineage_text], show_progress="hidden",
                  api_visibility="private")

    remove.click(ask_delete, [picker], [confirm_box, confirm_text, confirm_yes, change_message],
                 api_visibility="private")
    confirm_yes.click(do_delete, [picker], [confirm_box, change_message, *outputs], api_visibility="private")
    confirm_no.click(lambda: gr.Group(visible=False), None, [confirm_box], queue=False, api_visibility="private")
    return ModelsTab(settings=settings, refresh_fn=refresh, outputs=outputs)
