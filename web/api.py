"""The REST API under /api: datasets, jobs (with metrics and logs), models, a health check.

Every route but /api/health needs HTTP Basic credentials (web/auth.py). The routes are thin: they
parse the request, call `web.services`, and shape the answer with `web.schemas`; the service
errors map to status codes in one place (`register_error_handlers`):

    InvalidInput 422 (detail lists the field, like FastAPI's own validation errors)
    NotFound 404 · PermissionDenied 403 · UploadTooLarge 413 · Conflict 409

Handlers are plain `def`s on purpose: FastAPI runs them in its thread pool, so database calls,
file copies and corpus validation never block the event loop that also serves the Gradio UI.
"""

from __future__ import annotations

import os
import tempfile
from typing import Annotated, Any, Callable

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, Response, UploadFile, status
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.session import SessionLocal
from db.settings import Settings, safe_join
from web import services
from web.auth import CurrentUser, WriterUser, get_app_settings, get_db_session
from web.schemas import (
    DatasetOut,
    ErrorOut,
    HealthOut,
    JobDetailOut,
    JobOut,
    JobSubmit,
    LogLineOut,
    MetricOut,
    ModelOut,
    PretrainEstimateOut,
)

DbSession = Annotated[Session, Depends(get_db_session)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]

# A multipart body is the file plus boundaries and the small form fields; allow for those when
# comparing Content-Length with the file-size limit, so a file just under the limit is not refused.
MULTIPART_ALLOWANCE_BYTES = 64 * 1024
COPY_CHUNK_BYTES = 1024 * 1024

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no or wrong credentials"},
    403: {"model": ErrorOut, "description": "the user's role does not allow this"},
    404: {"model": ErrorOut, "description": "unknown id"},
}

STATUS_OF_ERROR: dict[type[services.ServiceError], int] = {
    services.InvalidInput: status.HTTP_422_UNPROCESSABLE_CONTENT,
    services.NotFound: status.HTTP_404_NOT_FOUND,
    services.PermissionDenied: status.HTTP_403_FORBIDDEN,
    services.UploadTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
    services.Conflict: status.HTTP_409_CONFLICT,
}


def _service_error_response(request: Request, error: services.ServiceError) -> JSONResponse:
    code = next((c for cls, c in STATUS_OF_ERROR.items() if isinstance(error, cls)), status.HTTP_400_BAD_REQUEST)
    if code == status.HTTP_422_UNPROCESSABLE_CONTENT:
        # Same shape as FastAPI's request validation errors, so clients handle both alike.
        where = "query" if request.method == "GET" else "body"
        location = [where, *(error.field.split(".") if error.field else [])]
        return JSONResponse(status_code=code, content={"detail": [
            {"loc": location, "msg": error.message, "type": "value_error"}]})
    return JSONResponse(status_code=code, content={"detail": error.message})


def register_error_handlers(app: FastAPI) -> None:
    """Map `services.ServiceError` to HTTP answers (exception handlers live on the app, not a router)."""
    app.add_exception_handler(services.ServiceError, _service_error_response)  # type: ignore[arg-type]


class UploadSizeLimitRoute(APIRoute):
    """Refuses an upload whose Content-Length is over the limit before its body is read.

    FastAPI reads (and spools to disk) the whole multipart body before the handler or any
    dependency runs; checking the header here saves receiving a 10 GB file only to refuse it.
    Bodies without a Content-Length (chunked) are still counted while they are copied.
    """

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def limited_handler(request: Request) -> Response:
            settings = get_app_settings(request)
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > settings.max_upload_bytes + MULTIPART_ALLOWANCE_BYTES:
                return JSONResponse(status_code=status.HTTP_413_CONTENT_TOO_LARGE, content={
                    "detail": f"upload is {int(length) / 1024 / 1024:.1f} MB; the limit is "
                              f"{settings.max_upload_mb} MB (WORKBENCH_MAX_UPLOAD_MB)"})
            return await handler(request)

        return limited_handler


router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)
upload_router = APIRouter(prefix="/api", responses=ERROR_RESPONSES, route_class=UploadSizeLimitRoute)


# ----------------------------------------------------------------------------- health


@router.get("/health", response_model=HealthOut, tags=["health"], responses={503: {"model": HealthOut}})
def health(settings: AppSettings) -> Any:
    """Liveness + database check; no authentication, for load balancers and `serve` start-up.

    The session is opened inside the check (not through the request dependency) so that a
    database that cannot even be connected to answers 503 with the reason, not a 500.
    """
    try:
        with SessionLocal(settings.database_url) as session:
            session.execute(text("SELECT 1"))
    except Exception as error:  # any driver error means "not healthy"; say which
        return JSONResponse(status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                            content={"status": "error", "database": f"{type(error).__name__}: {error}"[:300]})
    return {"status": "ok", "database": "ok"}


# ----------------------------------------------------------------------------- datasets


def _receive_upload(upload: UploadFile, settings: Settings) -> str:
    """Copy the upload into a temporary file inside the data dir, refusing it once it is over the limit."""
    temp_dir = safe_join(settings.data_dir, "tmp")
    temp_dir.mkdir(parents=True, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(prefix="upload-", dir=temp_dir)  # our name, not the user's
    received = 0
    try:
        with os.fdopen(handle, "wb") as out:
            while chunk := upload.file.read(COPY_CHUNK_BYTES):
                received += len(chunk)
                services.check_upload_size(received, settings)
                out.write(chunk)
    except BaseException:
        os.unlink(temp_path)
        raise
    return temp_path


@upload_router.post("/datasets", response_model=DatasetOut, status_code=status.HTTP_201_CREATED,
                    tags=["datasets"], responses={413: {"model": ErrorOut, "description": "file too large"},
                                                  422: {"model": ErrorOut, "description": "invalid file"}})
def upload_dataset(
    user: WriterUser,
    session: DbSession,
    settings: AppSettings,
    file: Annotated[UploadFile, File(description="the corpus: .txt, .jsonl, .csv or .parquet")],
    name: Annotated[str, Form(description="display name; default: the file name")] = "",
    kind: Annotated[str, Form(description="text | chat | preference | prompts")] = "text",
) -> Any:
    """Upload a dataset. Text corpora are validated (errors name the line) before anything is stored."""
    services.upload_extension(file.filename or "")  # refuse a wrong type before copying anything
    temp_path = _receive_upload(file, settings)
    try:
        dataset = services.store_dataset_upload(session, settings, temp_path, file.filename or "", name, kind,
                                                owner_id=user)
        return services.dataset_to_dict(dataset)
    finally:
        os.unlink(temp_path)


@router.get("/datasets", response_model=list[DatasetOut], tags=["datasets"])
def list_datasets(user: CurrentUser, session: DbSession,
                  kind: Annotated[str | None, Query(description="only this kind")] = None) -> Any:
    return services.list_datasets(kind=kind, session=session)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut, tags=["datasets"])
def get_dataset(dataset_id: int, user: CurrentUser, session: DbSession) -> Any:
    return services.get_dataset(dataset_id, session=session)


# ----------------------------------------------------------------------------- jobs


@router.post("/jobs", response_model=JobDetailOut, status_code=status.HTTP_201_CREATED, tags=["jobs"],
             responses={422: {"model": ErrorOut, "description": "invalid kind or params (the field is named)"}})
def submit_job(body: JobSubmit, user: WriterUser, session: DbSession) -> Any:
    """Queue a job. `params` are the CLI flags with underscores; nothing is stored if one is wrong."""
    job = services.submit_job(session, body.kind, body.params, user, priority=body.priority)
    return services.get_job_detail(job.id, session=session)


@router.get("/jobs", response_model=list[JobOut], tags=["jobs"])
def list_jobs(user: CurrentUser, session: DbSession,
              status_filter: Annotated[str | None, Query(alias="status", description="queued, running, ...")] = None,
              kind: Annotated[str | None, Query(description="pretrain, sft, ...")] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> Any:
    """Jobs, newest first."""
    return services.list_jobs(status=status_filter, kind=kind, limit=limit, session=session)


@router.get("/jobs/{job_id}", response_model=JobDetailOut, tags=["jobs"])
def get_job(job_id: int, user: CurrentUser, session: DbSession) -> Any:
    """Status, progress, the latest value of each metric, error, output model."""
    return services.get_job_detail(job_id, session=session)


@router.get("/jobs/{job_id}/metrics", response_model=list[MetricOut], tags=["jobs"])
def get_job_metrics(job_id: int, user: CurrentUser, session: DbSession,
                    name: Annotated[str | None, Query(description="only this metric")] = None,
                    after_step: Annotated[int | None, Query(description="only steps after this one")] = None) -> Any:
    return services.job_metrics(job_id, name=name, after_step=after_step, session=session)


@router.get("/jobs/{job_id}/logs", response_model=list[LogLineOut], tags=["jobs"])
def get_job_logs(job_id: int, user: CurrentUser, session: DbSession,
                 after_id: Annotated[int, Query(ge=0, description="only lines with a larger id")] = 0,
                 limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> Any:
    return services.job_logs(job_id, after_id=after_id, limit=limit, session=session)


@router.post("/jobs/{job_id}/cancel", response_model=JobDetailOut, tags=["jobs"],
             responses={409: {"model": ErrorOut, "description": "the job has already finished"}})
def cancel_job(job_id: int, user: WriterUser, session: DbSession) -> Any:
    """Ask a job to stop: a queued job never starts, a running one checkpoints and stops."""
    return services.cancel_job(session, job_id, user)


@router.post("/jobs/{job_id}/resume", response_model=JobDetailOut, tags=["jobs"],
             responses={409: {"model": ErrorOut, "description": "the job is not failed or cancelled"}})
def resume_job(job_id: int, user: WriterUser, session: DbSession) -> Any:
    """Queue a failed or cancelled job again, to continue from its last checkpoint."""
    return services.resume_job(session, job_id, user)


@router.post("/estimates/pretrain", response_model=PretrainEstimateOut, tags=["jobs"])
def estimate_pretrain(params: dict[str, Any], user: CurrentUser, settings: AppSettings) -> Any:
    """Parameter count, tokens per step and a rough duration for pretrain params (nothing is queued)."""
    return services.estimate_pretrain(params, data_dir=settings.data_dir)


# ----------------------------------------------------------------------------- models


@router.get("/models", response_model=list[ModelOut], tags=["models"])
def list_models(user: CurrentUser, session: DbSession,
                kind: Annotated[str | None, Query(description="base, sft, reward, dpo")] = None) -> Any:
    return services.list_models(kind=kind, session=session)


def include_api(app: FastAPI) -> None:
    """Add the API routes and their error handlers to an app."""
    app.include_router(upload_router)
    app.include_router(router)
    register_error_handlers(app)
