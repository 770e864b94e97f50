"""The web application: FastAPI with the REST API under /api and the Gradio UI mounted at /.

`create_app(settings)` builds a new app for the given settings (tests make one per database);
`workbench serve` runs it with uvicorn. The API routes are added before the Gradio mount, and
Starlette matches routes in order, so /api/..., /docs and /openapi.json reach FastAPI while
everything else goes to Gradio. The UI asks for a login (Gradio's own form, checked against the
users table by `web.auth.gradio_login`); after it, UI callbacks read `request.username`.

`web.security.install` wraps everything, Gradio's routes included: same-origin CORS (plus
WORKBENCH_ALLOWED_ORIGINS), cross-site writes refused with 403, cookies SameSite=Lax (Secure on
https). Failed logins, by HTTP Basic or the form, are throttled per account and per address by one
`web.login_throttle.LoginThrottle` per app (`app.state.login_throttle`).

Engines are per process (`db.session.get_engine` caches by URL and pid): nothing here opens a
connection at import or build time, so an app built before a fork is safe to serve after it.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# No phoning home: these machines are offline, and a self-hosted tool should not report usage.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402  (after the analytics switch, which gradio reads at import)
from fastapi import FastAPI  # noqa: E402

from db.settings import Settings, get_settings  # noqa: E402
from web.api import include_api  # noqa: E402
from web.auth import SessionsOfEnabledUsers, gradio_login  # noqa: E402
from web.login_throttle import LoginThrottle  # noqa: E402
from web.security import install as install_cross_site_guard  # noqa: E402

TITLE = "LLM Workbench"
log = logging.getLogger(__name__)


def _placeholder_ui(settings: Settings) -> gr.Blocks:
    """Shown only while `web.ui` does not exist yet (the UI is built in parallel with the API)."""
    with gr.Blocks(title=TITLE) as blocks:
        gr.Markdown(f"# {TITLE}\nThe user interface is not installed yet; the REST API is at "
                    f"[/docs](/docs). Data directory: `{settings.data_dir}`.")
    return blocks


def build_blocks(settings: Settings) -> gr.Blocks:
    """The Gradio UI from `web.ui.build_ui`, or a placeholder if that package is absent.

    Only a missing package (or one without `build_ui` yet) falls back; an import error inside the
    UI code (e.name is then another module) is raised, not hidden.
    """
    if importlib.util.find_spec("web.ui") is None:
        return _placeholder_ui(settings)
    try:
        from web.ui import build_ui
    except ImportError as error:
        if error.name != "web.ui":
            raise
        log.warning("web.ui has no build_ui yet; serving a placeholder UI")
        return _placeholder_ui(settings)
    return build_ui(settings)


@asynccontextmanager
async def start_up_heap_frozen(app: FastAPI) -> AsyncIterator[None]:
    """While the app serves, the objects made at start-up sit in the collector's permanent generation.

    Importing torch, Gradio and SQLAlchemy and building the UI leaves ~370,000 long-lived objects, and
    every full (oldest-generation) collection walks all of them: ~200 ms on a 2-core machine, during which
    the process answers nothing. Under steady load that came every ~30 s and made the slowest 1% of label
    submits (bench/bench_labeling.py). `gc.freeze()` takes them out of every later collection; they are
    given back (`gc.unfreeze()`) when serving stops, so a process that builds many apps (the tests) can
    still collect the ones it is done with. Freezing is O(1); no collection runs first (start-up leaves little
    garbage), so starting an app stays free."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """A FastAPI app serving the API and the UI for `settings` (default: from the environment)."""
    settings = settings or get_settings()
    app = FastAPI(
        title=TITLE,
        description="REST API of the LLM Workbench: datasets, jobs (metrics, logs, cancel, resume) and "
                    "models. Authenticate with HTTP Basic (a workbench user name and password). "
                    "The browser UI is at /.",
        version="0.1.0",
        docs_url="/docs",
        redoc_url=None,
        lifespan=start_up_heap_frozen,
    )
    app.state.settings = settings
    app.state.login_throttle = LoginThrottle()
    include_api(app)
    install_cross_site_guard(app, settings)
    blocks = build_blocks(settings)
    app = gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        auth=gradio_login(settings, app.state.login_throttle),
        auth_message="Log in with your LLM Workbench account.",
        # Uploads through the UI obey the same limit as the API's.
        max_file_size=settings.max_upload_bytes,
        # Server-side rendering needs a Node server process; the UI works without it.
        ssr_mode=False,
        show_error=True,
    )
    # A disabled user's open UI sessions end at their next request (web.auth.SessionsOfEnabledUsers).
    gradio_app = next(route.app for route in app.routes if isinstance(getattr(route, "app", None), gr.routes.App))
    gradio_app.tokens = SessionsOfEnabledUsers(settings.database_url)
    # Gradio 6.31's queue runs an event's `validator` (the Train forms' field checks) with `blocks.app`'s session
    # states, and mount_gradio_app leaves that at an App that serves nothing: a dropdown whose choices a refresh
    # filled was then refused ("Value: 1 is not in the list of choices: []"). `launch()` points it at the server.
    blocks.app = gradio_app
    return app
