"""Jobs: submit (validated against the kind's declaration), list, detail with its events, metrics, logs,
and the changes their owner (or an admin) makes: cancel, resume, rename, delete.

Reading jobs needs `Action.read_training` (labelers see none); the read functions take the viewer
(`viewer=None` is an internal caller). Changes need the job to be the user's own or an admin's hand
(`access.require_owner`), and each records who made it (`worker.jobs.lifecycle.record_event`).
"""

from __future__ import annotations

import logging
import shutil

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db.models import Completion, Job, JobEvent, JobLog, JobStatus, Metric, Model, User
from db.settings import Settings, safe_join
from web.services.access import Action, require, require_owner, resolve_user
from web.services.common import Conflict, InvalidInput, NotFound, enum_value, parse_enum, reading, refuse_unprintable
from worker.jobs.throughput import estimated_seconds

log = logging.getLogger(__name__)

NAME_MAX_CHARS = 200  # jobs.name and models.name are String(200)
FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


def _job_summary(job: Job, owner_name: str | None = None) -> dict:
    return {
        "id": job.id,
        "name": job.name,
        "kind": enum_value(job.kind),
        "status": enum_value(job.status),
        "priority": job.priority,
        "progress": job.progress or 0.0,
        "params": job.params or {},
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "heartbeat_at": job.heartbeat_at,
        "error": job.error,
        "worker_host": job.worker_host,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "resumable": job.resumable,
        "devices": job.devices,
        "assigned_devices": job.assigned_devices,
        "dataset_id": job.dataset_id,
        "input_model_id": job.input_model_id,
        "output_model_id": job.output_model_id,
        "owner_id": job.owner_id,
        "owner": owner_name,
        "run_dir": job.run_dir,
    }


def submit_job(session: Session, kind: str, params: dict | None, owner: User | int | str | None,
               priority: int = 0) -> Job:
    """Create a queued Job row (validated by `worker.jobs.lifecycle.create_job`, which commits), then enqueue its id.

    The id goes to the queue only after the commit, so a worker can never receive an id it cannot
    read. If the broker is unreachable the row stays queued (the database is the source of truth)
    and `requeue_orphans()` or the reaper sends it later; the caller still gets the job.
    """
    from worker.jobs.lifecycle import JobParamsError, create_job, enqueue

    user = resolve_user(session, owner)
    require(user, Action.write)
    if not isinstance(params, dict):
        raise InvalidInput("params must be an object of parameter names to values", field="params")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidInput(f"priority must be a whole number, got {priority!r}", field="priority")
    try:
        job = create_job(session, kind, params, owner_id=user.id if user else None, priority=priority)
    except JobParamsError as error:
        session.rollback()
        # "kind" and "priority" are top-level fields of the request; everything else is a param.
        field = error.field if error.field in ("kind", "priority", "params") else f"params.{error.field}"
        raise InvalidInput(f"{error.field}: {error.message}", field=field) from error
    except BaseException:
        session.rollback()
        raise
    if not enqueue(job.id):
        session.add(JobLog(job_id=job.id, line="the queue was unreachable; the job waits in the database "
                                               "and is sent when the broker is back"))
        session.commit()
    return job


def list_jobs(status: str | None = None, kind: str | None = None, limit: int = 200,
              session: Session | None = None, viewer: User | dict | None = None) -> list[dict]:
    """Jobs newest first (one query with the owner's name; no metrics, so it stays fast for polling)."""
    require(viewer, Action.read_training)
    with reading(session) as s:
        query = (select(Job, User.name).outerjoin(User, User.id == Job.owner_id)
                 .order_by(Job.id.desc()).limit(max(1, min(int(limit), 1000))))
        if status:
            query = query.where(Job.status == parse_enum(JobStatus, status, "status"))
        if kind:
            query = query.where(Job.kind == kind)  # any name: old jobs may be of kinds no longer declared
        return [_job_summary(job, owner_name) for job, owner_name in s.execute(query)]


def _get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


def latest_metrics(session: Session, job_id: int) -> dict[str, dict]:
    """{name: {"step", "value"}} of the most recent record of each metric of a job."""
    newest_ids = select(func.max(Metric.id)).where(Metric.job_id == job_id).group_by(Metric.name)
    rows = session.scalars(select(Metric).where(Metric.id.in_(newest_ids)))
    return {m.name: {"step": m.step, "value": m.value} for m in rows}


def job_events(session: Session, job_id: int) -> list[dict]:
    """Who changed the job and when, oldest first: [{action, user (name, None = the system), at, detail}]."""
    rows = session.execute(select(JobEvent, User.name).outerjoin(User, User.id == JobEvent.user_id)
                           .where(JobEvent.job_id == job_id).order_by(JobEvent.id))
    return [{"action": event.action, "user": name, "at": event.created_at, "detail": event.detail}
            for event, name in rows]


def get_job_detail(job_id: int, session: Session | None = None, viewer: User | dict | None = None) -> dict:
    """Everything the job page shows at once: the summary, the latest value of each metric, the events.

    `metrics` maps name -> latest value; `metric_steps` maps name -> the step it was recorded at
    (eval metrics such as val_loss arrive less often than loss, so their steps differ); `events` lists
    who changed the job (see `job_events`); `estimate` is the time estimated at submit ({seconds, source}, see
    `worker.jobs.throughput.estimated_seconds`) or None.
    """
    require(viewer, Action.read_training)
    with reading(session) as s:
        job = _get_job(s, job_id)
        owner_name = s.scalar(select(User.name).where(User.id == job.owner_id)) if job.owner_id else None
        detail = _job_summary(job, owner_name)
        latest = latest_metrics(s, job_id)
        detail["metrics"] = {name: item["value"] for name, item in latest.items()}
        detail["metric_steps"] = {name: item["step"] for name, item in latest.items()}
        detail["events"] = job_events(s, job_id)
        estimated = estimated_seconds(detail["events"])
        detail["estimate"] = {"seconds": estimated[0], "source": estimated[1]} if estimated else None
        return detail


def step_reached(settings: Settings, detail: dict) -> int | None:
    """The last step a job's training reached: its newest metric step, or, for a run that stopped between
    two logged steps (cancelled, failed), the step of the checkpoint it saved when it stopped."""
    steps = list((detail.get("metric_steps") or {}).values())
    if detail.get("status") in ("cancelled", "failed") and detail.get("run_dir"):
        from llm.train import checkpoint_step

        steps.append(checkpoint_step(safe_join(settings.data_dir, detail["run_dir"])) or None)
    steps = [step for step in steps if step is not None]
    return max(steps) if steps else None


def job_metrics(job_id: int, name: str | None = None, after_step: int | None = None,
                session: Session | None = None, viewer: User | dict | None = None) -> list[dict]:
    """Every metric record of a job in the order written: [{step, name, value}] (for the curves)."""
    require(viewer, Action.read_training)
    with reading(session) as s:
        _get_job(s, job_id)
        query = select(Metric.step, Metric.name, Metric.value).where(Metric.job_id == job_id)
        if name:
            query = query.where(Metric.name == name)
        if after_step is not None:
            query = query.where(Metric.step > after_step)
        return [{"step": step, "name": metric_name, "value": value}
                for step, metric_name, value in s.execute(query.order_by(Metric.id))]


def job_logs(job_id: int, after_id: int = 0, limit: int = 1000, session: Session | None = None,
             viewer: User | dict | None = None) -> list[dict]:
    """Log lines of a job with id > after_id (so a poller fetches only what is new): [{id, created_at, line}]."""
    require(viewer, Action.read_training)
    with reading(session) as s:
        _get_job(s, job_id)
        query = (select(JobLog).where(JobLog.job_id == job_id, JobLog.id > after_id)
                 .order_by(JobLog.id).limit(max(1, min(int(limit), 10000))))
        return [{"id": row.id, "created_at": row.created_at, "line": row.line} for row in s.scalars(query)]


def _job_to_change(session: Session, job_id: int, user) -> tuple[User | None, Job]:
    """(acting user, job) when the user may change this job: their own, or anyone's for an admin."""
    acting = resolve_user(session, user)
    require(acting, Action.change_own_job)
    job = _get_job(session, job_id)
    require_owner(acting, job.owner_id, Action.change_own_job, Action.change_any_job, f"job {job_id}")
    return acting, job


def _change_job_state(session: Session, job_id: int, user, transition) -> dict:
    """Run a worker.jobs.lifecycle state transition for the job's owner or an admin, mapping its errors to the service's."""
    from worker.jobs.lifecycle import JobNotFoundError, JobStateError

    acting, _ = _job_to_change(session, job_id, user)
    try:
        transition(session, job_id, by_user_id=acting.id if acting is not None else None)
    except JobNotFoundError:
        raise NotFound(f"job {job_id} does not exist") from None
    except JobStateError as error:
        raise Conflict(str(error)) from None
    return get_job_detail(job_id, session=session)


def cancel_job(session: Session, job_id: int, user: User | int | str | None = None) -> dict:
    """Cancel a job: a queued one never starts, a running one checkpoints and stops at its next step."""
    from worker.jobs.lifecycle import request_cancel

    return _change_job_state(session, job_id, user, request_cancel)


def resume_job(session: Session, job_id: int, user: User | int | str | None = None,
               devices: int | None = None, nodes: int | None = None) -> dict:
    """Queue a failed or cancelled job again (and enqueue it); it continues from its last checkpoint, on
    `devices` devices per worker and `nodes` workers when given (a training job's checkpoint resumes at another
    world size).

    A job marked not resumable (killed for memory, settings that cannot work) is refused: running it
    again would fail the same way."""
    from worker.jobs.lifecycle import JobParamsError, resume_job as queue_again

    def resume_if_resumable(session: Session, job_id: int, by_user_id: int | None = None):
        if not _get_job(session, job_id).resumable:
            raise Conflict(f"job {job_id} cannot be resumed: it would fail the same way again (see its error); "
                           "submit a new job with other settings instead")
        try:
            return queue_again(session, job_id, by_user_id=by_user_id, devices=devices, nodes=nodes)
        except JobParamsError as error:
            session.rollback()
            raise InvalidInput(f"{error.field}: {error.message}", field=error.field) from error

    return _change_job_state(session, job_id, user, resume_if_resumable)


def clean_name(name: object, what: str) -> str | None:
    """A display name as stored: trimmed, at most NAME_MAX_CHARS, no control or bidirectional control character;
    blank means none (the default shows)."""
    if name is not None and not isinstance(name, str):
        raise InvalidInput(f"the {what} name must be text, got {name!r}", field="name")
    refuse_unprintable(name or "", "name")
    text = (name or "").strip()
    if len(text) > NAME_MAX_CHARS:
        raise InvalidInput(f"the {what} name is {len(text)} characters; the limit is {NAME_MAX_CHARS}", field="name")
    return text or None


def rename_job(session: Session, job_id: int, name: str | None, user: User | int | str | None = None) -> dict:
    """Give a job a name (blank: none, the kind shows); its owner or an admin; recorded as an event."""
    from worker.jobs.lifecycle import record_event

    new_name = clean_name(name, "job")
    acting, job = _job_to_change(session, job_id, user)
    old_name = job.name
    job.name = new_name
    record_event(session, job_id, "renamed", acting.id if acting else None,
                 f"{old_name or '(none)'} → {new_name or '(none)'}")
    session.commit()
    return get_job_detail(job_id, session=session)


def job_dependents(session: Session, job_id: int) -> list[str]:
    """What would lose its source if the job went: the models it produced and the answers it generated."""
    models = session.execute(select(Model.id, Model.name).where(Model.job_id == job_id).order_by(Model.id)).all()
    found = [f"model #{model_id} {name!r}" for model_id, name in models]
    completions = session.scalar(select(func.count()).select_from(Completion).where(Completion.job_id == job_id))
    if completions:
        found.append(f"{completions} generated answer{'s' if completions != 1 else ''} (labeling and arena data)")
    return found


def delete_job(session: Session, settings: Settings, job_id: int, user: User | int | str | None = None) -> None:
    """Delete a finished job (its owner or an admin): its row, metrics, logs and events, then its run directory.

    Refused (Conflict) while it is queued or running (cancel it first) and while something depends on it
    (its output model: delete that first). The row goes first; the files are removed after the commit, so
    a failure leaves at worst an orphan directory, never a row whose files are gone.
    """
    acting, job = _job_to_change(session, job_id, user)
    if job.status not in FINISHED:
        raise Conflict(f"job {job_id} is {enum_value(job.status)}; cancel it first, then delete it")
    dependents = job_dependents(session, job_id)
    if dependents:
        raise Conflict(f"job {job_id} cannot be deleted: {', '.join(dependents)} depend on it; delete "
                       f"{'them' if len(dependents) > 1 else 'it'} first")
    run_dir = job.run_dir
    for table in (Metric, JobLog, JobEvent):  # the schema cascades too; explicit keeps both backends alike
        session.execute(delete(table).where(table.job_id == job_id))
    deleted = session.execute(delete(Job).where(Job.id == job_id, Job.status.in_(FINISHED))).rowcount
    if not deleted:  # resumed by someone else since we read it
        session.rollback()
        raise Conflict(f"job {job_id} was queued again meanwhile; cancel it first, then delete it")
    session.commit()
    log.info("job %s deleted by %s", job_id, acting.name if acting else "the system")
    if run_dir:
        shutil.rmtree(safe_join(settings.data_dir, run_dir), ignore_errors=True)


def job_kinds() -> list[dict]:
    """The declared job kinds as plain data (the REST schema of every kind's params)."""
    from worker.kinds import KINDS

    return [{"kind": str(spec.kind), "title": spec.title, "description": spec.description,
             "params": {name: {key: value for key, value in vars(setting).items()
                               if value is not None or key == "default"} for name, setting in spec.params.items()},
             "dataset_kinds": [k.value for k in spec.dataset_kinds], "model_kinds": [k.value for k in spec.model_kinds],
             "produces": spec.produces.value if spec.produces else None} for spec in KINDS.values()]
