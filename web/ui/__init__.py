"""The Gradio UI: one module per tab, assembled by `build_ui(settings)`.

    Datasets · Train ▸ one sub-tab per job kind · Jobs · Chat · Arena · Label · Models · Admin (admins only)

The Train sub-tabs are built from the job registry (`worker.kinds.KINDS`, in its order) by `train_tab.build`:
a kind added to the registry gets its form with no code here.

Every tab reads and changes things only through `web.services` (the REST API uses the same
functions), and keeps no state of its own beyond what the browser shows: datasets, jobs, metrics,
logs and models live in the database, so a browser refresh loses nothing. The tab and the job a
person was looking at are remembered in the browser's localStorage (gr.BrowserState) so a refresh
reopens them.

Labelers see Label, Chat and Arena only: the Datasets, Train, Jobs and Models tabs are built hidden and
shown on load to the training team (`visible_tabs`; Gradio 6 can show a hidden tab from an event but not
hide a shown one); the services refusing labelers (`Action.read_training`) is what makes that secure.

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
    """Admins and trainers create datasets and jobs; labelers only label and chat (web.services.access)."""
    from web.services import Action, can

    return can(user, Action.write)


FIRST_TRAIN_TAB = "pretrain"  # the Train sub-tab that opens first

# The training team's tabs (Action.read_training); the Admin tab has its own rule (admin_tab).
TRAINING_TABS = ("datasets", "train", "jobs", "models")
REMEMBERED_TAB_KEY = "workbench-tab"


def visible_tabs(user: dict | None) -> dict[str, bool]:
    """{tab id: shown} for the tabs whose visibility depends on the role."""
    from web.services import Action, can

    training = can(user, Action.read_training)
    return {tab: training for tab in TRAINING_TABS}


def tab_to_open(remembered: str | None, user: dict | None) -> str:
    """The tab to open on load: the remembered one while this user may see it; else Datasets for the
    training team and Label for labelers (their work)."""
    shown = visible_tabs(user)
    if remembered and shown.get(str(remembered), True) and (remembered != "admin" or _is_admin(user)):
        return str(remembered)
    return "datasets" if shown["datasets"] else "label"


def _is_admin(user: dict | None) -> bool:
    from web.services import Action, can

    return can(user, Action.manage_users)


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
        '<span style="font-size:13px;font-weight:400;opacity:.65">data → tokenizer → pretrain → fine-tune → labels → reward · DPO → chat · arena</span></div>'
        f'<div id="wb-whoami" style="font-size:14px">{who}</div></div>'
    )


def build_ui(settings) -> gr.Blocks:
    """The whole UI for `settings` (data dir, database URL); mounted at "/" by web.app."""
    from web.ui import admin_tab, arena_tab, chat_tab, datasets_tab, jobs_tab, label_tab, models_tab, train_tab
    from worker.kinds import KINDS

    with gr.Blocks(title=TITLE, fill_width=True) as blocks:
        header = gr.HTML(header_html(None), elem_id="wb-header")
        with gr.Tabs(elem_id="wb-tabs") as tabs:
            with gr.Tab("Datasets", id="datasets", elem_id="tab-datasets", visible=False) as datasets_page:
                datasets = datasets_tab.build(settings)
            with gr.Tab("Train", id="train", elem_id="tab-train", visible=False) as train_page:
                train_forms = []  # (form, its sub-tab)
                with gr.Tabs(selected=FIRST_TRAIN_TAB):
                    for spec in KINDS.values():
                        names = spec.form_names
                        with gr.Tab(names.tab, id=names.tab_id, elem_id=f"tab-{names.tab_id}") as page:
                            train_forms.append((train_tab.build(settings, spec), page))
            with gr.Tab("Jobs", id="jobs", elem_id="tab-jobs", visible=False) as jobs_page:
                jobs = jobs_tab.build(settings)
            with gr.Tab("Chat", id="chat", elem_id="tab-chat") as chat_page:
                chat = chat_tab.build(settings)
            with gr.Tab("Arena", id="arena", elem_id="tab-arena") as arena_page:
                arena = arena_tab.build(settings)
            with gr.Tab("Label", id="label", elem_id="tab-label") as label_page:
                label = label_tab.build(settings)  # its Projects & agreement sub-tab: admins and trainers
            with gr.Tab("Models", id="models", elem_id="tab-models", visible=False) as models_page:
                models = models_tab.build(settings)
            with gr.Tab("Admin", id="admin", elem_id="tab-admin", visible=False) as admin_page:
                admin = admin_tab.build(settings)  # shown on load to admins only

        remembered_tab = gr.BrowserState(None, storage_key=REMEMBERED_TAB_KEY)
        role_pages = {"datasets": datasets_page, "train": train_page, "jobs": jobs_page, "models": models_page}

        def on_load(remembered, request: gr.Request):
            """The header, the tabs this user's role shows, and the tab they were on before a reload."""
            user = current_user(settings, request)
            shown = visible_tabs(user)
            opened = tab_to_open(remembered, user)
            return (header_html(user), *(gr.Tab(visible=shown[tab]) for tab in role_pages),
                    gr.Tabs(selected=opened))

        blocks.load(on_load, [remembered_tab], [header, *role_pages.values(), tabs], queue=False,
                    api_visibility="private")
        for tab_id, page in {**role_pages, "chat": chat_page, "arena": arena_page, "label": label_page,
                             "admin": admin_page}.items():
            page.select(lambda tab_id=tab_id: tab_id, None, [remembered_tab], queue=False, api_visibility="private")
        # Each tab refreshes what other tabs may have changed when it is opened (new datasets for
        # the pretrain form, new models for chat), and the jobs timer runs only while Jobs is open.
        datasets.wire(blocks, datasets_page)
        for form, page in train_forms:  # a dataset uploaded or a model trained meanwhile is offered
            form.wire(blocks, train_page, page)
        jobs.wire(blocks, jobs_page)
        chat.wire(blocks, chat_page)
        arena.wire(blocks, arena_page)
        label.wire(blocks, label_page)
        models.wire(blocks, models_page)
        admin.wire(blocks, admin_page)
        # "→ model #n" in a job opens Chat with that model.
        jobs.open_models_in(tabs, "chat", remembered_tab, chat)
        # After a successful submit, jump to Jobs and show the new job.
        for form, _ in train_forms:
            form.after_submit(tabs, "jobs", jobs.on_job)
    return blocks
