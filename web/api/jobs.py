"""/api/jobs: submit (validated against the kind's declaration), list, detail, metrics, logs,
cancel, resume; and /api/estimates for a run's size and time before it is submitted."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy.orm import Session

from db.settings import Settings
from web import services
from web.api.errors import ERROR_RESPONSES
from web.api.ids import SQL_INTEGER_MAX, JobId, bounded_query
from web.auth import CurrentUser, WriterUser, get_app_settings, get_db_session
from worker.jobs.devices import MAX_SLOTS
from web.schemas import (ErrorOut, JobDetailOut, JobKindOut, JobOut, JobSubmit, LogLineOut, MetricOut, NameChange,
                         PretrainEstimateOut)

DbSession = Annotated[Session, Depends(get_db_session)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]
router = APIRouter(prefix="/api", responses=ERROR_RESPONSES, tags=["jobs"])


@router.post("/jobs", response_model=JobDetailOut, status_code=status.HTTP_201_CREATED,
             responses={422: {"model": ErrorOut, "description": "invalid kind or params (the field is named)"}})
def submit_job(body: JobSubmit, user: WriterUser, session: DbSession) -> Any:
    """Queue a job. `params` are the CLI flags with underscores; nothing is stored if one is wrong."""
    job = services.submit_job(session, body.kind, body.params, user, priority=body.priority)
    return services.get_job_detail(job.id, session=session)


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(user: CurrentUser, session: DbSession,
              status_filter: Annotated[str | None, Query(alias="status", description="queued, running, ...")] = None,
              kind: Annotated[str | None, Query(description="pretrain, sft, ...")] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> Any:
    """Jobs, newest first."""
    return services.list_jobs(status=status_filter, kind=kind, limit=limit, session=session)


@router.get("/jobs/{job_id}", response_model=JobDetailOut)
def get_job(job_id: JobId, user: CurrentUser, session: DbSession) -> Any:
    """Status, progress, the latest value of each metric, error, output model."""
    return services.get_job_detail(job_id, session=session)


@router.get("/jobs/{job_id}/metrics", response_model=list[MetricOut])
def get_job_metrics(job_id: JobId, user: CurrentUser, session: DbSession,
                    name: Annotated[str | None, Query(description="only this metric")] = None,
                    after_step: Annotated[int | None, bounded_query("only steps after this one",
                                                                    ge=-SQL_INTEGER_MAX - 1)] = None) -> Any:
    return services.job_metrics(job_id, name=name, after_step=after_step, session=session)


@router.get("/jobs/{job_id}/logs", response_model=list[LogLineOut])
def get_job_logs(job_id: JobId, user: CurrentUser, session: DbSession,
                 after_id: Annotated[int, bounded_query("only lines with a larger id")] = 0,
                 limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> Any:
    return services.job_logs(job_id, after_id=after_id, limit=limit, session=session)


@router.post("/jobs/{job_id}/cancel", response_model=JobDetailOut,
             responses={409: {"model": ErrorOut, "description": "the job has already finished"}})
def cancel_job(job_id: JobId, user: WriterUser, session: DbSession) -> Any:
    """Ask a job to stop: a queued job never starts, a running one checkpoints and stops."""
    return services.cancel_job(session, job_id, user)


@router.post("/jobs/{job_id}/resume", response_model=JobDetailOut,
             responses={409: {"model": ErrorOut, "description": "the job is not failed or cancelled"},
                        422: {"model": ErrorOut, "description": "devices: more than any live worker has"}})
def resume_job(job_id: JobId, user: WriterUser, session: DbSession,
               devices: Annotated[int | None, Query(ge=1, le=MAX_SLOTS, description="resume on this many devices per "
                                                     "worker (a training job: its checkpoint resumes at another "
                                                     "world size)")] = None,
               nodes: Annotated[int | None, Query(ge=1, le=MAX_SLOTS, description="resume on this many workers "
                                                  "(machines), e.g. the one left when another is gone")] = None) -> Any:
    """Queue a failed or cancelled job again, to continue from its last checkpoint (on `devices` devices per
    worker, on `nodes` workers)."""
    return services.resume_job(session, job_id, user, devices=devices, nodes=nodes)


@router.patch("/jobs/{job_id}", response_model=JobDetailOut,
              responses={422: {"model": ErrorOut, "description": "the name is too long"}})
def rename_job(job_id: JobId, body: NameChange, user: CurrentUser, session: DbSession) -> Any:
    """Name a job (blank clears it); its owner or an admin. Recorded in the job's events."""
    return services.rename_job(session, job_id, body.name, user)


@router.delete("/jobs/{job_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={409: {"model": ErrorOut, "description": "queued or running, or a model depends on it"}})
def delete_job(job_id: JobId, user: CurrentUser, session: DbSession, settings: AppSettings) -> Response:
    """Delete a finished job with its metrics, logs and run directory; its owner or an admin."""
    services.delete_job(session, settings, job_id, user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/estimates/pretrain", response_model=PretrainEstimateOut)
def estimate_pretrain(params: dict[str, Any], user: CurrentUser, session: DbSession) -> Any:
    """Parameter count, tokens per step, peak memory and a rough duration for pretrain params (nothing is
    queued): the pretrain kind's own estimate, the one its submit check compares."""
    return services.estimate_run("pretrain", params, session=session)


@router.get("/job-kinds", response_model=list[JobKindOut])
def job_kinds(user: CurrentUser) -> Any:
    """Every job kind the workers run, with its parameters (type, default, bounds, help) as declared."""
    return services.job_kinds()
