"""The REST API under /api, one router per resource: health, datasets, jobs, models, labeling,
users, arena, feedback.

Every route but /api/health needs HTTP Basic credentials (web/auth.py). The routes are thin: they
parse the request, call `web.services`, and shape the answer with `web.schemas`; service errors map
to status codes in one place (`web/api/errors.py`).

Handlers are plain `def`s on purpose: FastAPI runs them in its thread pool, so database calls,
file copies and validation never block the event loop that also serves the Gradio UI.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from web.api import arena, datasets, feedback, health, jobs, labeling, models, users
from web.api.errors import register_error_handlers
from web.auth import user_allowed_to
from web.services import Action

# Datasets and jobs are the training team's (Action.read_training): a labeler gets 403 on every route.
TRAINING_ONLY = [Depends(user_allowed_to(Action.read_training))]


def include_api(app: FastAPI) -> None:
    """Add the API routes and their error handlers to an app."""
    training_routers = (datasets.upload_router, datasets.router, jobs.router)
    for router in (health.router, datasets.upload_router, datasets.router, jobs.router, models.router,
                   labeling.router, users.router, arena.router, feedback.router):
        app.include_router(router, dependencies=TRAINING_ONLY if router in training_routers else None)
    register_error_handlers(app)
