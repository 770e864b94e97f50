"""/api/models: list, read, download as a zip; import a Hugging Face GPT-2 (admins); rename and delete
(owner or admin). Labelers see the chat models only and download nothing (web.services.models)."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from sqlalchemy.orm import Session

from db.settings import Settings
from web import services
from web.api.errors import ERROR_RESPONSES
from web.api.ids import ModelId
from web.auth import AdminUser, CurrentUser, get_app_settings, get_db_session
from web.schemas import ErrorOut, ModelImport, ModelOut, NameChange

DbSession = Annotated[Session, Depends(get_db_session)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]
router = APIRouter(prefix="/api", responses=ERROR_RESPONSES, tags=["models"])


@router.get("/models", response_model=list[ModelOut])
def list_models(user: CurrentUser, session: DbSession,
                kind: Annotated[str | None, Query(description="base, sft, reward, dpo")] = None) -> Any:
    return services.list_models(kind=kind, session=session, viewer=user)


@router.get("/models/importable", response_model=list[str])
def importable_models(user: AdminUser, settings: AppSettings) -> Any:
    """Hugging Face GPT-2 directories an admin can import (sub-directories of WORKBENCH_IMPORT_DIR)."""
    return services.importable_models(settings)


@router.post("/models/import", response_model=ModelOut, status_code=status.HTTP_201_CREATED,
             responses={422: {"model": ErrorOut, "description": "not a directory of the import directory"}})
def import_model(body: ModelImport, user: AdminUser, session: DbSession, settings: AppSettings) -> Any:
    """Import a Hugging Face GPT-2 from the import directory as a base model (admins only)."""
    return services.model_to_dict(services.import_model(session, settings, body.directory, body.name, user))


@router.get("/models/{model_id}", response_model=ModelOut)
def get_model(model_id: ModelId, user: CurrentUser, session: DbSession) -> Any:
    return services.get_model(model_id, session=session, viewer=user)


@router.get("/models/{model_id}/download", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "Hugging Face-format files"}})
def download_model(model_id: ModelId, user: CurrentUser, session: DbSession, settings: AppSettings) -> Any:
    """The model as a zip: a transformers GPT-2 directory, or a peft adapter with its config."""
    archive, filename = services.model_zip(settings, model_id, session=session, viewer=user)
    return FileResponse(archive, media_type="application/zip", filename=filename,
                        background=BackgroundTask(os.unlink, archive))


@router.patch("/models/{model_id}", response_model=ModelOut,
              responses={422: {"model": ErrorOut, "description": "the name is empty or too long"}})
def rename_model(model_id: ModelId, body: NameChange, user: CurrentUser, session: DbSession) -> Any:
    """Rename a model; its owner or an admin."""
    return services.rename_model(session, model_id, body.name, user)


@router.delete("/models/{model_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={409: {"model": ErrorOut, "description": "models, jobs or answers depend on it (named)"}})
def delete_model(model_id: ModelId, user: CurrentUser, session: DbSession, settings: AppSettings) -> Response:
    """Delete a model and its files; its owner or an admin. Refused while anything depends on it."""
    services.delete_model(session, settings, model_id, user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
