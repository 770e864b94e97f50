"""/api/datasets: upload (caller checked before the body is read, size counted while it streams), list, read,
rename, delete."""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Annotated, Any, Callable

import anyio
from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, Response, UploadFile, status
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.types import Message, Receive

from db.session import SessionLocal
from db.settings import Settings, safe_join
from web import services
from web.api.errors import ERROR_RESPONSES
from web.api.ids import DatasetId
from web.auth import (CurrentUser, WriterUser, basic_security, current_user, get_app_settings, get_db_session,
                      get_login_throttle, user_allowed_to)
from web.schemas import DatasetOut, ErrorOut, NameChange

DbSession = Annotated[Session, Depends(get_db_session)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]

# A multipart body is the file plus boundaries and the small form fields; allow for those when
# comparing the body's size with the file-size limit, so a file just under the limit is not refused.
MULTIPART_ALLOWANCE_BYTES = 64 * 1024
COPY_CHUNK_BYTES = 1024 * 1024


# On a refusal before the body is read, the connection is closed after the answer: otherwise the server
# (uvicorn, for keep-alive) would go on receiving the body the client is still sending, only to drop it.
CLOSE = {"Connection": "close"}


def _too_large(settings: Settings, size_bytes: int | None = None) -> HTTPException:
    size = f"upload is {size_bytes / 1024 / 1024:.1f} MB" if size_bytes is not None else "upload is too large"
    return HTTPException(status_code=status.HTTP_413_CONTENT_TOO_LARGE, headers=CLOSE,
                         detail=f"{size}; the limit is {settings.max_upload_mb} MB (WORKBENCH_MAX_UPLOAD_MB)")


def _closing(error: HTTPException) -> HTTPException:
    return HTTPException(status_code=error.status_code, detail=error.detail, headers={**(error.headers or {}), **CLOSE})


async def _check_uploader(request: Request) -> None:
    """Raise the 401 / 429 / 403 the route's dependencies would, from the headers alone (no body read).

    The same functions as the dependencies (`current_user`, `user_allowed_to`), run here because FastAPI
    parses a multipart body before any dependency runs. bcrypt runs in a worker thread, as it does for a
    sync dependency; the dependencies then find the credentials in the verified-credentials cache.
    """
    credentials = await basic_security(request)
    settings = get_app_settings(request)
    throttle = get_login_throttle(request)

    def check() -> None:
        session = SessionLocal(settings.database_url)
        try:
            user_allowed_to(services.Action.write)(current_user(credentials, session, throttle))
        finally:
            session.close()

    try:
        await anyio.to_thread.run_sync(check)
    except HTTPException as error:
        raise _closing(error) from None


def _counting_receive(receive: Receive, settings: Settings) -> Receive:
    """`receive` that counts the body's bytes as they arrive and raises 413 once they pass the limit
    (whether or not the client sent a Content-Length: a chunked body is counted the same way)."""
    limit = settings.max_upload_bytes + MULTIPART_ALLOWANCE_BYTES
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(settings)
        return message

    return counted


class GuardedUploadRoute(APIRoute):
    """An upload route that asks who is calling before it reads a byte of the body, and stops reading it
    once it is over the size limit.

    In order: credentials and role (401 / 429 / 403 with no body read), the Content-Length when there is
    one (413 with no body read), then the body's bytes counted while FastAPI streams them into its
    multipart parser (413 as soon as they pass the limit). What the parser had spooled is an anonymous
    temporary file, gone with the request.
    """

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def guarded_handler(request: Request) -> Response:
            await _check_uploader(request)
            settings = get_app_settings(request)
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > settings.max_upload_bytes + MULTIPART_ALLOWANCE_BYTES:
                raise _too_large(settings, int(length))
            return await handler(Request(request.scope, _counting_receive(request.receive, settings)))

        return guarded_handler


router = APIRouter(prefix="/api", responses=ERROR_RESPONSES, tags=["datasets"])
upload_router = APIRouter(prefix="/api", responses=ERROR_RESPONSES, route_class=GuardedUploadRoute,
                          tags=["datasets"])


def _receive_upload(upload: UploadFile, settings: Settings) -> tuple[str, str]:
    """(temporary path inside the data dir, SHA-256) of the upload, hashed while it is copied and refused
    once it is over the limit; nothing is left behind when it is refused."""
    temp_dir = safe_join(settings.data_dir, "tmp")
    temp_dir.mkdir(parents=True, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(prefix="upload-", dir=temp_dir)  # our name, not the user's
    received, digest = 0, hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as out:
            while chunk := upload.file.read(COPY_CHUNK_BYTES):
                received += len(chunk)
                services.check_upload_size(received, settings)
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        os.unlink(temp_path)
        raise
    return temp_path, digest.hexdigest()


@upload_router.post(
    "/datasets", response_model=DatasetOut, status_code=status.HTTP_201_CREATED,
    responses={200: {"model": DatasetOut, "description": "this exact file (same SHA-256) is already a dataset of "
                                                         "this kind: that dataset, with already_stored true; "
                                                         "nothing new is stored"},
               413: {"model": ErrorOut, "description": "file too large"},
               422: {"model": ErrorOut, "description": "invalid file"},
               429: {"model": ErrorOut, "description": "too many failed logins"}})
def upload_dataset(
    user: WriterUser,
    session: DbSession,
    settings: AppSettings,
    response: Response,
    file: Annotated[UploadFile, File(description="the corpus: .txt, .jsonl, .csv or .parquet")],
    name: Annotated[str, Form(description="display name; default: the file name")] = "",
    kind: Annotated[str, Form(description="text | chat | preference | prompts")] = "text",
) -> Any:
    """Upload a dataset. Errors name the file, line and field; nothing is stored half-way.

    Credentials and role are checked before the body is read, and the body's size while it arrives.
    201: stored as a new dataset. 200: the same file was already uploaded as a dataset of this kind; the
    answer is that dataset with `already_stored: true`, and no duplicate is stored.
    """
    services.upload_extension(file.filename or "")  # refuse a wrong type before copying anything
    temp_path, content_sha256 = _receive_upload(file, settings)
    try:
        stored = services.store_dataset_upload(session, settings, temp_path, file.filename or "", name, kind,
                                               owner_id=user, content_sha256=content_sha256)
    finally:
        os.unlink(temp_path)
    if stored.already_stored:
        response.status_code = status.HTTP_200_OK
    return {**services.dataset_to_dict(stored.dataset), "already_stored": stored.already_stored, "note": stored.note}


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(user: CurrentUser, session: DbSession,
                  kind: Annotated[str | None, Query(description="only this kind")] = None) -> Any:
    return services.list_datasets(kind=kind, session=session)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: DatasetId, user: CurrentUser, session: DbSession) -> Any:
    return services.get_dataset(dataset_id, session=session)


@router.patch("/datasets/{dataset_id}", response_model=DatasetOut,
              responses={422: {"model": ErrorOut, "description": "blank or too long name"}})
def rename_dataset(dataset_id: DatasetId, body: NameChange, user: CurrentUser, session: DbSession) -> Any:
    """Rename a dataset: its owner (trainer) or an admin."""
    return services.rename_dataset(session, dataset_id, body.name, user)


@router.delete("/datasets/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={409: {"model": ErrorOut, "description": "queued or running jobs use it (named)"}})
def delete_dataset(dataset_id: DatasetId, user: CurrentUser, session: DbSession, settings: AppSettings) -> Response:
    """Delete a dataset (its owner or an admin): the row, then its file and prepared data.

    Refused (409, naming them) while queued or running jobs use it. Finished jobs keep their record and
    models, with the dataset link cleared and an event saying who deleted it; failed or cancelled ones can
    no longer be resumed.
    """
    services.delete_dataset(session, settings, dataset_id, user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
