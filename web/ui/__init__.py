"""The Gradio UI: one module per tab, assembled by `build_ui(settings)`.

    Datasets · Train ▸ Pretrain · Jobs · Chat

Every tab reads and changes things only through `web.services` (the REST API uses the same
functions), and keeps no state of its own beyond what the browser shows: datasets, jobs, metrics,
logs and models live in the database, so a browser refresh loses nothing. The job a person was
looking at is remembered in the browser's localStorage (gr.BrowserState) so a refresh reopens it.

Login is Gradio's own form, set up by `web.app.create_app` (`auth=` on `gr.mount_gradio_app`);
handlers learn who is calling from `request.username` (gr.Request) and look the user up with
`services.get_user`. Roles are enforced by the services (labelers cannot upload or submit); the
UI also greys out what a role cannot do.

Styling: Gradio 6 takes `css=`/`theme=` in `launch()`/`mount_gradio_app`, which `web.app` owns,
so the UI carries its own styles inline or as component-scoped `css_template`s and works with
whatever theme the app mounts it with.
"""

from __future__ import annotations

import html
import logging
from contextlib import contextmanager
from typing import Any, Iterator

import gradio as gr

log = logging.getLogger(__name__)

TITLE = "LLM Workbench"


@contextmanager
def db_session(settings) -> Iterator[Any]:
    """A short session on the app's own database (tests build apps with their own settings)."""
    from db.session import session_scope

    with session_scope(settings.database_url) as session:
        yield session


def username(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def current_user(settings, request: gr.Request | None) -> dict | None:
    """{id, name, role} of the logged-in user, or None (no login configured, e.g. a local demo)."""
    from web import services

    name = username(request)
    if not name:
        return None
    with db_session(settings) as session:
        return services.get_user(name, session=session)


def can_write(user: dict | None) -> bool:
    """Admins and trainers create datasets and jobs; labelers only label and chat."""
    return user is None or user.get("role") in ("admin", "trainer")


def error_text(error: BaseException) -> str:
    """A message for people: services' errors carry one; anything else gets its type named."""
    message = getattr(error, "message", None) or str(error)
    if not message:
        message = type(error).__name__
    return message


def header_html(user: dict | None) -> str:
    if user is None:
        who = '<span style="opacity:.7">not signed in</span>'
    else:
        role = user.get("role") or "?"
        who = (f'signed in as <b class="wb-user">{html.escape(user["name"])}</b> '
               f'<span class="wb-role" style="display:inline-block;padding:1px 8px;border-radius:999px;'
               f'font-size:12px;background:rgba(99,102,241,.15);color:#4f46e5;font-weight:600">'
               f'{html.escape(role)}</span> · <a href="logout" style="color:inherit">log out</a>')
    return (
        '<div class="wb-header" style="display:flex;align-items:center;justify-content:space-between;'
        'padding:6px 4px 2px 4px">'
        f'<div style="font-size:22px;font-weight:700">{TITLE} '
        '<span style="font-size:13px;font-weight:400;opacity:.65">data → tokenizer → pretrain → chat</span></div>'
        f'<div id="wb-whoami" style="font-size:14px">{who}</div></div>'
    )


def build_ui(settings) -> gr.Blocks:
    """The whole UI for `settings` (data dir, database URL); mounted at "/" by web.app."""
    from web.ui import chat_tab, datasets_tab, jobs_tab, pretrain_tab

    with gr.Blocks(title=TITLE, fill_width=True) as blocks:
        header = gr.HTML(header_html(None), elem_id="wb-header")
        with gr.Tabs(elem_id="wb-tabs") as tabs:
            with gr.Tab("Datasets", id="datasets", elem_id="tab-datasets") as datasets_page:
                datasets = datasets_tab.build(settings)
            with gr.Tab("Train", id="train", elem_id="tab-train") as train_page:
                with gr.Tabs():
                    with gr.Tab("Pretrain", id="pretrain", elem_id="tab-pretrain"):
                        pretrain = pretrain_tab.build(settings)
            with gr.Tab("Jobs", id="jobs", elem_id="tab-jobs") as jobs_page:
                jobs = jobs_tab.build(settings)
            with gr.Tab("Chat", id="chat", elem_id="tab-chat") as chat_page:
                chat = chat_tab.build(settings)

        def on_load(request: gr.Request):
            return header_html(current_user(settings, request))

        blocks.load(on_load, None, header, queue=False, api_visibility="private")
        # Each tab refreshes what other tabs may have changed when it is opened (new datasets for
        # the pretrain form, new models for chat), and the jobs timer runs only while Jobs is open.
        datasets.wire(blocks, datasets_page)
        pretrain.wire(blocks, train_page)
        jobs.wire(blocks, jobs_page)
        chat.wire(blocks, chat_page)
        # After a successful submit, jump to Jobs and show the new job.
        pretrain.after_submit(tabs, "jobs", jobs.on_job)
    return blocks
