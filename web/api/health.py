"""GET /api/health: is the platform up, for anyone (load balancers, `serve`); each part of it, for admins.

Without credentials (or with a user who is not an admin) the answer is `{"status": "ok"}` or, with 503,
`{"status": "error"}`: host names, process ids and workers' memory are nobody else's business. An admin's
HTTP Basic credentials get the parts below.

Parts: the database (SELECT 1), the broker (Redis PING), the workers consuming the job queue (their
presence beats in the broker, see `worker.jobs.presence.WorkerPresence`, each with its device slots and the
running job holding each slot) and, under `workbench serve`,
the processes it supervises (`app.state.supervisor`, see `worker.runtime.supervisor`). 200 when every part is
up, 503 (same body) when one is down, each part saying why.

Workers count as down when none beats within WORKBENCH_STALE_AFTER_SECONDS but one was seen recently
or `serve` runs one; when no worker was ever seen (workers on other machines not started yet) the
part reads "none seen" and the status stays ok: the web app works, jobs wait in the queue.
"""

from __future__ import annotations

from typing import Any

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasicCredentials
from sqlalchemy import text

from db.session import SessionLocal
from db.settings import Settings
from web.auth import basic_security, check_password, get_app_settings, get_login_throttle
from web.schemas import HealthOut
from worker.jobs.messages import broker_url_of, job_queue_of

router = APIRouter(prefix="/api", tags=["health"])

OK = "ok"


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def check_database(settings: Settings) -> str:
    # The session is opened here (not through the request dependency) so that a database that
    # cannot even be connected to answers 503 with the reason, not a 500.
    try:
        with SessionLocal(settings.database_url) as session:
            session.execute(text("SELECT 1"))
    except Exception as error:  # any driver error means "not healthy"; say which
        return _reason(error)
    return OK


def check_broker(settings: Settings) -> str:
    from worker.runtime.broker_state import ping_broker

    try:
        ping_broker(broker_url_of(settings))
    except Exception as error:
        return _reason(error)
    return OK


def check_workers(settings: Settings, supervised_worker: bool) -> tuple[str, list[dict]]:
    """The workers part and the workers seen; `supervised_worker`: serve runs one, so one is expected."""
    from worker.jobs.presence import seen_workers

    queue = job_queue_of(settings)
    try:
        workers = seen_workers(broker_url_of(settings), queue, settings.stale_after_seconds)
    except Exception as error:
        return f"down: unknown, the broker is unreachable ({_reason(error)})", []
    if any(worker["alive"] for worker in workers):
        return OK, workers
    if workers:
        newest = workers[0]
        return (f"down: no worker of queue {queue!r} has beaten for {settings.stale_after_seconds:g}s "
                f"(last: {newest['node']}, {newest['seconds_since']:g}s ago)"), workers
    if supervised_worker:
        return f"down: the local worker has not beaten yet (queue {queue!r})", workers
    return "none seen", workers


def with_device_jobs(settings: Settings, workers: list[dict]) -> list[dict]:
    """Each worker with its device slots and the running job holding each (`web.services.with_device_jobs`)."""
    from web.services import with_device_jobs as join

    try:
        with SessionLocal(settings.database_url) as session:
            return join(session, workers)
    except Exception:  # the database answered a moment ago; without it the workers are shown as beaten
        return workers


def _is_admin(request: Request, settings: Settings, credentials: HTTPBasicCredentials | None) -> bool:
    """Whether the caller sent an admin's right credentials (throttled like every login; a database that
    cannot be reached makes everybody an outsider, who still learns the platform is down)."""
    from web.services import Action, can

    if credentials is None:
        return False
    try:
        with SessionLocal(settings.database_url) as session:
            user = check_password(session, credentials.username, credentials.password, get_login_throttle(request))
            return user is not None and can(user, Action.manage_users)
    except Exception:  # throttled, or the database is down: the short answer
        return False


@router.get("/health", response_model=HealthOut, response_model_exclude_none=True,
            responses={503: {"model": HealthOut}})
def health(request: Request,
           credentials: Annotated[HTTPBasicCredentials | None, Depends(basic_security)] = None) -> Any:
    """Up or down for anyone (503 when a part is down); each part's state for an admin's credentials."""
    settings = get_app_settings(request)
    supervisor = getattr(request.app.state, "supervisor", None)
    processes = supervisor.states() if supervisor is not None else {}
    database = check_database(settings)
    broker = check_broker(settings)
    workers, seen = check_workers(settings, supervised_worker="worker" in processes)
    seen = with_device_jobs(settings, seen) if database == OK else seen
    body = {"database": database, "broker": broker, "workers": workers, "seen_workers": seen,
            "processes": processes}
    up = (database == OK and broker == OK and not workers.startswith("down")
          and all(state.startswith("running") for state in processes.values()))
    body["status"] = OK if up else "error"
    if not _is_admin(request, settings, credentials):
        body = {"status": body["status"]}
    if not up:
        return JSONResponse(status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                            content=HealthOut(**body).model_dump(exclude_none=True))
    return body
