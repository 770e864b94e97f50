"""The job lifecycle in the database: submit, validate, enqueue, claim, cancel, resume.

    queued ──claim──> running ──> succeeded | failed | cancelled
      ^  │                │  ^
      │  └─cancel─> cancelled (at once)      running ──cancel──> cancel_requested=True
      └──── resume <── cancelled | failed     (the job checkpoints and stops: cancelled)
      └──── reaper <── running with a stale heartbeat (worker killed)

The database is the source of truth; the broker only carries "a job is waiting" messages with a
job id (see `worker.runtime.celery_app`). Rules every function here keeps:

  - Validate before inserting: `create_job` raises `JobParamsError(field, message)` and stores
    nothing when a parameter is wrong, so the UI can show the message next to the field.
  - Commit before sending: a message is sent only after the row it refers to is committed, so a
    worker can never receive a message for a job it cannot see yet.
  - Every state change that can race (two workers claiming, a worker finishing while a reaper
    requeues, a cancel while a worker claims) is a conditional UPDATE ... WHERE status = ...
    whose rowcount says who won. This works the same on SQLite and PostgreSQL.
  - `attempts` is incremented by every claim and is the job's fencing token: a worker writes the
    job's outcome only `WHERE attempts = <its attempt>`, so a worker that was presumed dead and
    replaced cannot overwrite its successor's state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from db.models import Dataset, Job, JobEvent, JobLog, JobNode, JobStatus, Model, utcnow
from db.settings import get_settings
from llm.tokenizer import tokenizer_names
from llm.train_config import SCHEDULE_FIELDS
from worker.jobs import devices as device_slots
from worker.jobs.fit import RunEstimate, check_devices
from worker.kinds import KINDS, JobKindSpec, get_spec
from worker.jobs.messages import send_run_job
from worker.jobs.params import JobParamsError, check_params
from worker.jobs.references import check_reference  # JobParamsError re-exported: callers catch it here
from worker.jobs.throughput import ESTIMATE_EVENT, submit_estimate

logger = logging.getLogger(__name__)

PRIORITY_RANGE = (-100, 100)
CLAIM_ATTEMPTS = 10  # SQLite may report "database is locked" when two claims collide; retry.
# A job waiting this long for more device slots than are free stops smaller jobs behind it from taking the worker's
# slots as they free up (`_reserving_job`): backfilling never starves it for longer.
RESERVE_AFTER_S = 600.0


class JobStateError(ValueError):
    """The job is not in a state that allows the requested change (e.g. resuming a running job)."""


class JobNotFoundError(LookupError):
    """No job with that id."""


# ----------------------------------------------------------------------------- validation

def validate_params(session: Session, kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Check `params` for a job of `kind` against its declaration; return them with defaults filled in.

    Raises JobParamsError(field, message) on the first problem found (unknown names first, then
    missing required ones, then each value in turn, then the dataset, model and tokenizer it names,
    then the kind's own cross-field checks).
    """
    return _validated(session, kind, params)[0]


def _validated(session: Session, kind: str, params: dict[str, Any] | None
               ) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]], str | None]:
    """`validate_params`'s answer, and the step-counted settings the kind's checks fitted to the run ({name:
    (value given or defaulted, value stored)}: `worker.jobs.fit.check_schedule` shrinks a warmup, eval_every or
    checkpoint_every equal to its default with a run shorter than the default one, whether or not it was typed), and
    what the job will wait for when no live worker can say whether it has its devices (`fit.check_devices`)."""
    spec = _check_kind(kind)
    normalized = check_params(spec.kind, spec.params, params)
    settings = get_settings()
    _check_references(session, spec, normalized, settings)
    waiting = check_devices(normalized, settings)  # before the memory check: a job no worker can take is said first
    before = dict(normalized)
    if spec.check is not None:
        spec.check(session, normalized, settings)
    fitted = {name: (before[name], normalized[name]) for name in SCHEDULE_FIELDS
              if name in before and normalized.get(name) != before[name]}
    return normalized, fitted, waiting


def preview(session: Session, kind: str,
            params: dict[str, Any] | None) -> tuple[dict[str, Any], RunEstimate | None]:
    """The kind's estimate of a run (its `estimate.py`) for what a Train form holds so far: `params` checked as
    `validate_params` checks them, except that required ones may still be missing, then the same function the
    kind's submit check calls. So a value submit refuses is refused here with the same field and message, and
    the memory shown is the figure the check compares. Returns (the params checked, with their defaults; the
    estimate, or None when the kind has none or the params leave nothing to estimate from).
    """
    spec = _check_kind(kind)
    normalized = check_params(spec.kind, spec.params, params, require=False)
    if spec.estimate is None:
        return normalized, None
    settings = get_settings()
    _check_references(session, spec, normalized, settings)
    check_devices(normalized, settings)
    return normalized, spec.estimate(session, normalized, settings)


def _check_references(session: Session, spec: JobKindSpec, params: dict[str, Any], settings) -> None:
    """The dataset, model and tokenizer the params name must exist and be of a kind the job takes."""
    if params.get("dataset_id") is not None:  # optional for kinds with other sources (reward, DPO)
        check_reference(session, spec, "dataset_id", Dataset, params["dataset_id"], spec.dataset_kinds)
    if params.get("model_id") is not None:
        check_reference(session, spec, "model_id", Model, params["model_id"], spec.model_kinds)
    if "tokenizer" in spec.params:
        names = tokenizer_names(settings.data_dir)
        if params["tokenizer"] not in names:
            raise JobParamsError("tokenizer", f"unknown tokenizer {params['tokenizer']!r}; "
                                              f"choose one of {', '.join(names)}")


def _check_kind(kind: str) -> JobKindSpec:
    """The declaration of `kind`: the registry (worker.kinds.KINDS) is the list of kinds; the database holds
    any name, so this is where an unknown one is refused."""
    spec = get_spec(kind)
    if spec is None:
        raise JobParamsError("kind", f"unknown job kind {kind!r}; choose one of {', '.join(KINDS)}")
    return spec


# ----------------------------------------------------------------------------- submit

def create_job(session: Session, kind: str, params: dict[str, Any] | None,
               owner_id: int | None = None, priority: int = 0) -> Job:
    """Validate and insert a queued job, commit, and return it. Does NOT enqueue (see `submit_job`).

    Raises JobParamsError and inserts nothing when a parameter is wrong.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise JobParamsError("priority", f"must be a whole number, got {priority!r}")
    if not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        raise JobParamsError("priority", f"must be between {PRIORITY_RANGE[0]} and {PRIORITY_RANGE[1]}")
    kind = str(_check_kind(kind).kind)  # the registry's name, stored as a plain string
    normalized, fitted, waiting = _validated(session, kind, params)
    job = Job(kind=kind, status=JobStatus.queued, params=normalized, priority=priority,
              devices=device_slots.requested_devices(normalized),
              owner_id=owner_id, dataset_id=normalized.get("dataset_id"),
              input_model_id=normalized.get("model_id"), progress=0.0, attempts=0,
              cancel_requested=False)
    session.add(job)
    session.flush()  # assigns job.id
    # Relative to the data dir: the data dir can move (a new mount) without rewriting rows.
    job.run_dir = f"runs/{job.id}"
    session.add(JobLog(job_id=job.id, line=f"queued {kind} job (priority {priority})"))
    record_event(session, job.id, "submitted", owner_id)
    estimate = submit_estimate(session, get_spec(kind), normalized, get_settings())
    if estimate is not None:  # what the job's card compares with the time it took
        record_event(session, job.id, ESTIMATE_EVENT, None, estimate)
    if fitted:  # said, not done silently: the job's events (the submit's answer) and its log tell it
        note = (", ".join(f"{name} {given} → {stored}" for name, (given, stored) in fitted.items())
                + f": equal to their defaults, they were fitted to this {normalized['max_steps']}-step run "
                "(send other values to keep yours)")
        session.add(JobLog(job_id=job.id, line=note))
        record_event(session, job.id, "adjusted", None, note)
    if waiting:  # no worker alive to say whether it has the devices: queued, and what it waits for is said
        session.add(JobLog(job_id=job.id, line=waiting))
        record_event(session, job.id, "waiting", None, waiting)
    session.commit()
    return job


def enqueue(job_id: int) -> bool:
    """Send a run_job message for `job_id`; call only after the job's row is committed.

    Returns False (and logs) when the broker is unreachable: the job stays queued in the
    database and is sent again by `requeue_orphans` at the next start or by the reaper.
    """
    try:
        send_run_job(job_id)
    except Exception as error:  # kombu raises OperationalError and friends; the DB row is what matters
        logger.warning("could not enqueue job %s (it stays queued in the database): %s", job_id, error)
        return False
    return True


def submit_job(session: Session, kind: str, params: dict[str, Any] | None,
               owner_id: int | None = None, priority: int = 0) -> Job:
    """`create_job` then `enqueue`: what the web and the CLI call."""
    job = create_job(session, kind, params, owner_id=owner_id, priority=priority)
    enqueue(job.id)
    return job


def add_log(session: Session, job_id: int, line: str) -> None:
    """Append one line to the job's log (not committed: the caller's transaction decides)."""
    session.add(JobLog(job_id=job_id, line=line))


def record_event(session: Session, job_id: int, action: str, user_id: int | None = None,
                 detail: str | None = None) -> None:
    """Record who changed a job's state (user_id None: the system): submitted, cancel_requested,
    cancelled, resumed, renamed, requeued, ... Not committed: it belongs to the change's transaction."""
    session.add(JobEvent(job_id=job_id, action=action, user_id=user_id, detail=detail))


def _user_name(session: Session, user_id: int | None) -> str:
    from db.models import User

    user = session.get(User, user_id) if user_id is not None else None
    return f" by {user.name}" if user is not None else ""


def _get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id}")
    return job


# ----------------------------------------------------------------------------- cancel / resume

def request_cancel(session: Session, job_id: int, by_user_id: int | None = None) -> Job:
    """Cancel a job: a queued one at once, a running one cooperatively (it checkpoints and stops).

    Raises JobStateError for a job that has already finished.
    """
    now = utcnow()
    # Conditional: a worker may be claiming this very job; exactly one of us wins.
    cancelled = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, finished_at=now, cancel_requested=True)
    ).rowcount
    if cancelled:
        add_log(session, job_id, f"cancelled before it started{_user_name(session, by_user_id)}")
        record_event(session, job_id, "cancelled", by_user_id)
        session.commit()
        return _get_job(session, job_id)
    flagged = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.running).values(cancel_requested=True)
    ).rowcount
    if flagged:
        add_log(session, job_id, f"cancel requested{_user_name(session, by_user_id)}; the job stops at its "
                                 "next step and saves a checkpoint")
        record_event(session, job_id, "cancel_requested", by_user_id)
        session.commit()
        return _get_job(session, job_id)
    session.rollback()
    job = _get_job(session, job_id)
    raise JobStateError(f"job {job_id} is already {job.status.value}; only queued or running jobs can be cancelled")


def resume_job(session: Session, job_id: int, by_user_id: int | None = None, devices: int | None = None,
               nodes: int | None = None) -> Job:
    """Put a cancelled or failed job back in the queue and enqueue it.

    Its run directory is kept, so a training job continues from its last checkpoint. `devices` / `nodes`: resume
    it on that many devices per worker / workers instead (a kind that declares them; checked like a submit's), e.g.
    on the machine that is left when one of two is gone: its checkpoint resumes at another world size.
    """
    asked = {name: value for name, value in (("devices", devices), ("nodes", nodes)) if value is not None}
    values = _placement_changed(session, job_id, asked) if asked else {}
    resumed = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_([JobStatus.cancelled, JobStatus.failed]))
        .values(status=JobStatus.queued, cancel_requested=False, error=None, finished_at=None,
                worker_host=None, heartbeat_at=None, assigned_devices=None, **values)
    ).rowcount
    if not resumed:
        session.rollback()
        job = _get_job(session, job_id)
        raise JobStateError(f"job {job_id} is {job.status.value}; only cancelled or failed jobs can be resumed")
    on = " on " + " and ".join(f"{count} {'device' if name == 'devices' else 'worker'}{'s' if count != 1 else ''}"
                               for name, count in asked.items()) if asked else ""
    add_log(session, job_id, f"resumed{_user_name(session, by_user_id)}{on}: queued again (training continues "
                             "from its last checkpoint)")
    record_event(session, job_id, "resumed", by_user_id)
    session.commit()
    enqueue(job_id)
    return _get_job(session, job_id)


def _placement_changed(session: Session, job_id: int, asked: dict[str, int]) -> dict[str, Any]:
    """The row's new params (and `devices` column) for a resume with other placement (`devices`, `nodes`:
    `PLACEMENT_PARAMS`); JobParamsError(name) when the kind has no such setting, the number is out of its bounds,
    or no live worker has that many devices."""
    job = _get_job(session, job_id)
    spec = get_spec(job.kind)
    params = dict(job.params or {})
    for name, value in asked.items():
        if spec is None or name not in spec.params:
            raise JobParamsError(name, f"a {job.kind} job runs on one {'device' if name == 'devices' else 'worker'}")
        try:
            params[name] = spec.params[name].check(name, value)
        except ValueError as error:
            raise JobParamsError(name, str(error)) from None
    check_devices(params, get_settings())
    session.rollback()  # end the read: the conditional UPDATE decides
    return {"params": params, **({"devices": params["devices"]} if "devices" in asked else {})}


def requeue_orphans(session: Session | None = None, reason: str = "the app started") -> list[int]:
    """Send a message for every queued job (at `serve` start, and when `serve` restarted its Redis:
    the broker may have lost them); returns the ids sent, each recorded as a "resent" event.

    Duplicates are harmless: a message that finds no queued job left does nothing.
    """
    if session is None:
        from db.session import session_scope

        with session_scope() as own_session:
            return requeue_orphans(own_session, reason)
    job_ids = list(session.scalars(
        select(Job.id).where(Job.status == JobStatus.queued).order_by(Job.priority.desc(), Job.id)))
    session.commit()  # no read transaction held while talking to the broker
    sent = [job_id for job_id in job_ids if enqueue(job_id)]
    for job_id in sent:
        record_event(session, job_id, "resent", None, f"{reason}: every queued job is sent again")
    session.commit()
    return sent


# ----------------------------------------------------------------------------- claim

def claim_next_job(session: Session, worker_host: str | None = None,
                   kinds: tuple[str, ...] | None = None, slots: Sequence[str] | None = None) -> Job | None:
    """Atomically take the best queued job (priority desc, then id asc) and mark it running.

    Returns the claimed job (status running, attempts incremented: the caller's fencing token), or
    None when no job is queued. Safe with any number of concurrent workers:
      - PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED, so concurrent claimers take different rows
        without waiting on each other;
      - SQLite (FOR UPDATE is ignored): the UPDATE re-checks status = 'queued' and its rowcount tells
        whether we won; a lost race moves on to the next candidate, a locked database is retried.

    `slots`: the worker's device slots (`worker.jobs.devices`; a worker passes `declared_slots()`). Then only a
    job whose `devices` fit the slots its running jobs leave free is taken (the best of those: a smaller job
    goes ahead of a larger one that must wait for slots, until that one has waited RESERVE_AFTER_S), and the slots
    it gets are recorded in its
    `assigned_devices`. The worker's processes pick one at a time (`devices.slot_lock`). Without `slots` (the
    job-layer tests, which play several workers with one name) no slot is counted, as before slots existed.
    """
    for attempt in range(CLAIM_ATTEMPTS):
        try:
            if slots is None:
                return _try_claim(session, worker_host, kinds)
            with device_slots.slot_lock(device_slots.node_of(worker_host or "")):
                return _try_claim(session, worker_host, kinds, slots)
        except OperationalError as error:
            # SQLite: "database is locked" when another writer holds the lock past busy_timeout, or
            # a read transaction could not be upgraded. Start a fresh transaction and try again.
            session.rollback()
            if attempt == CLAIM_ATTEMPTS - 1:
                raise  # the database is unreachable: the caller retries the message later
            logger.info("claim attempt %s failed (%s); retrying", attempt + 1, error.orig)
            time.sleep(0.05 * (attempt + 1))
    return None


def held_slots(session: Session, node: str) -> list[tuple[int, list[str] | None]]:
    """(job id, its slots on this worker) of each running job the worker (Celery node) `node` takes part in,
    whichever of its processes runs it (a worker_host is `<node>:<pid>`), in job id order: the jobs it claimed
    (their `assigned_devices`) and the multi-node jobs it follows (the `devices` of its open JobNode row in the
    job's current attempt; rendezvous.join records them)."""
    running_here = (Job.status == JobStatus.running) & Job.worker_host.startswith(node + ":", autoescape=True)
    claimed = session.execute(select(Job.id, Job.assigned_devices).where(running_here)).all()
    following = session.execute(
        select(JobNode.job_id, JobNode.devices).join(Job, Job.id == JobNode.job_id)
        .where(JobNode.node_rank > 0, JobNode.left_at.is_(None), JobNode.attempt == Job.attempts,
               Job.status == JobStatus.running, JobNode.worker_host.startswith(node + ":", autoescape=True))).all()
    return sorted(((job_id, slots) for job_id, slots in [*claimed, *following]), key=lambda row: row[0])


def _reserving_job(session: Session, slots: Sequence[str], free: int,
                   kinds: tuple[str, ...] | None) -> tuple[int, int] | None:
    """(priority, id) of the first queued job in queue order that fits this worker's slots but not the `free` ones
    and has waited RESERVE_AFTER_S: it reserves the worker (smaller jobs behind it no longer take the slots that
    free up, so it gets its N at last instead of waiting for ever behind 1-device jobs); None when there is none."""
    cutoff = utcnow() - timedelta(seconds=RESERVE_AFTER_S)
    query = select(Job.priority, Job.id).where(Job.status == JobStatus.queued, Job.devices > free,
                                               Job.devices <= len(slots), Job.created_at < cutoff)
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    row = session.execute(query.order_by(Job.priority.desc(), Job.id).limit(1)).first()
    return (row.priority, row.id) if row is not None else None


def _try_claim(session: Session, worker_host: str | None, kinds: tuple[str, ...] | None,
               slots: Sequence[str] | None = None) -> Job | None:
    # PostgreSQL: lock exactly the best row, so a concurrent claimer skips to the next-best one
    # (locking several would make it skip those too and take a lower-priority job).
    # SQLite: no row locks; look at a few candidates so a lost race can move on to the next.
    on_postgresql = session.get_bind().dialect.name == "postgresql"
    query = select(Job.id).where(Job.status == JobStatus.queued)
    free: list[str] | None = None
    if slots is not None:
        held = held_slots(session, device_slots.node_of(worker_host or ""))
        free = device_slots.free_slots(slots, (assigned for _, assigned in held))
        if not free:
            session.commit()
            return None
        query = query.where(Job.devices <= len(free))
        reserved = _reserving_job(session, slots, len(free), kinds)
        if reserved is not None:  # only jobs ahead of it may take this worker's slots now
            priority, reserved_id = reserved
            query = query.where((Job.priority > priority) | ((Job.priority == priority) & (Job.id < reserved_id)))
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    query = (query.order_by(Job.priority.desc(), Job.id).limit(1 if on_postgresql else 5)
             .with_for_update(skip_locked=True))
    candidates = list(session.scalars(query))
    for job_id in candidates:
        now = utcnow()
        values: dict[str, Any] = {}
        if free is not None:
            values["assigned_devices"] = device_slots.pick_slots(free, session.scalar(
                select(Job.devices).where(Job.id == job_id)) or 1)
        won = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.queued)
            .values(status=JobStatus.running, attempts=Job.attempts + 1, started_at=now,
                    heartbeat_at=now, finished_at=None, error=None, worker_host=worker_host,
                    cancel_requested=False, **values)
        ).rowcount
        if won:
            job = _get_job(session, job_id)
            on = f" on {', '.join(values['assigned_devices'])}" if values else ""
            add_log(session, job_id, f"started on {worker_host or 'a worker'}{on} (attempt {job.attempts})")
            session.commit()
            return job
    session.commit()  # release FOR UPDATE locks on rows we looked at but did not take
    return None


def waiting_for_slots(session: Session, worker_host: str | None, slots: Sequence[str],
                      kinds: tuple[str, ...] | None = None) -> str | None:
    """After a claim found nothing for this worker: "busy" when a queued job fits its `slots` but not the ones
    free now (a slot frees when one of its jobs ends), "elsewhere" when queued jobs remain that ask for more
    slots than it has (another worker's), None when nothing is queued."""
    query = select(func.max(Job.devices), func.min(Job.devices)).where(Job.status == JobStatus.queued)
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    largest, smallest = session.execute(query).one()
    session.commit()
    if largest is None:
        return None
    return "busy" if smallest <= len(slots) else "elsewhere"


# ----------------------------------------------------------------------------- finishing (fenced)

def finish_job(session: Session, job_id: int, attempt: int, status: JobStatus, *,
               error: str | None = None, log_line: str | None = None,
               extra_values: dict[str, Any] | None = None, event: str | None = None) -> bool:
    """Record the outcome of attempt `attempt` of a running job; commits.

    `event`: also record this system event (e.g. "requeued") with the log line as its detail.
    Returns False (and changes nothing) when the job is no longer this attempt's: it was reaped
    and claimed again, so the newer attempt owns it.
    """
    values: dict[str, Any] = {"status": status, "error": error, "heartbeat_at": None}
    if status.finished:
        values["finished_at"] = utcnow()
    if status == JobStatus.succeeded:
        values["progress"] = 1.0
    if status == JobStatus.queued:
        values["worker_host"] = None
    values.update(extra_values or {})
    won = session.execute(
        update(Job).where(Job.id == job_id, Job.attempts == attempt, Job.status == JobStatus.running)
        .values(**values)
    ).rowcount
    if not won:
        session.rollback()
        return False
    if log_line:
        add_log(session, job_id, log_line)
    if event:
        record_event(session, job_id, event, None, log_line)
    session.commit()
    return True
