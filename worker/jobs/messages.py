"""Sending "a job is waiting" messages, and the Celery settings every process of one install shares.

The web process, the CLI and the reaper send `run_job` messages by task name (`RUN_JOB_TASK`) through a
sending-only Celery app built here on first use; the worker's own app (`worker.runtime.celery_app`) is built
from the same `celery_config`, so the two always agree on broker, queue and serializer. Nothing here imports
Celery until a message is sent, and nothing imports the code that runs jobs: the job layer (`worker.jobs`)
stays free of the worker's runtime.

Configuration follows Celery's advice for long, idempotent jobs:
  - `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged only after the
    job function returns, so a worker lost mid-job does not lose the work. Our job function is
    idempotent and resumable (it claims from the database and training resumes from its
    checkpoint), which is what late acks require.
  - `worker_prefetch_multiplier = 1`: a worker reserves one message per slot, never a backlog
    that other idle workers could have run.
  - JSON only, and no result backend: results live in the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from db.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

# Where jobs go unless configured otherwise: the first name of WORKBENCH_WORKER_QUEUES (default
# "default"). Every process of one install shares that variable, so the web process, the reaper and
# the workers agree; a worker's --queues must include it to run jobs. A dedicated GPU box may list
# more queues after it ("default,gpu"); per-kind routing would need a queue per job kind.
DEFAULT_QUEUE = "default"
RUN_JOB_TASK = "workbench.run_job"

# Used only when WORKBENCH_BROKER_URL is empty and nobody configured a broker: the embedded Redis
# of `workbench serve` sets WORKBENCH_BROKER_URL for its children, so this is the local default.
FALLBACK_BROKER_URL = "redis://127.0.0.1:6379/0"

# When the database is down, a message is retried this often for about an hour before it is
# dropped (the job stays queued in the database; the reaper re-sends it once no message for it waits).
CLAIM_RETRY_DELAY_S = 10
CLAIM_MAX_RETRIES = 360


def broker_url_of(settings: Settings) -> str:
    """The broker every process of the install talks to (messages, worker presence, job beats)."""
    return settings.broker_url or FALLBACK_BROKER_URL


def job_queue_of(settings: Settings) -> str:
    """The queue jobs of this install go to: the first of WORKBENCH_WORKER_QUEUES."""
    return settings.worker_queues[0] if settings.worker_queues else DEFAULT_QUEUE


def celery_config(settings: Settings) -> dict:
    """The Celery settings for `settings` (new-style lowercase names)."""
    return {
        "broker_url": broker_url_of(settings),
        # Retry the first connection too (Celery 6 stops doing so by default): a worker started
        # alongside its broker (docker compose, serve) must not die because Redis is a second late.
        "broker_connection_retry_on_startup": True,
        # No results: the jobs table holds status, errors and outputs.
        "result_backend": None,
        "task_ignore_result": True,
        # Late acks + reject when the worker process is lost: at-least-once delivery. Safe because
        # run_job is idempotent (it claims atomically from the DB; training resumes from checkpoints).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message per worker slot: a long training job must not sit on a reserved backlog.
        "worker_prefetch_multiplier": 1,
        "task_default_queue": job_queue_of(settings),
        # JSON only: a pickle message could run arbitrary code in the worker.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "enable_utc": True,
        "timezone": "UTC",
        # A Redis blip must not abort an hour of training: the job keeps running and its state is in
        # the database. (Celery 6 will default to True; we keep the documented current behaviour.)
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # Publishing gives up after a few quick retries so a web request never hangs on a dead
        # broker; the job stays queued in the DB and is re-sent by requeue_orphans / the reaper.
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0,
                                      "interval_step": 0.5, "interval_max": 1},
        # Workers log through Celery's logger; job output goes to the JobLog table.
        "worker_hijack_root_logger": True,
    }


_sending_app: "Celery | None" = None


def sending_app() -> "Celery":
    """The sending-only Celery app of this process (built on first use; reconfigured when the environment
    names another broker or queue)."""
    global _sending_app
    if _sending_app is None:
        from celery import Celery  # only a process that sends pays for importing Celery

        _sending_app = Celery("workbench-sender")
        _sending_app.add_defaults(lambda: celery_config(get_settings()))
    return ensure_configured(_sending_app)


def send_run_job(job_id: int) -> None:
    """Send one run_job message carrying `job_id`; raises when the broker is unreachable."""
    app = sending_app()
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=job_queue(app))


def job_queue(celery_app: "Celery | None" = None) -> str:
    """The queue this process sends run_job messages to."""
    return (celery_app or sending_app()).conf.task_default_queue


def configure(celery_app: "Celery", settings: Settings | None = None) -> "Celery":
    """(Re)configure `celery_app` from `settings` (default: the environment now).

    Safe to call more than once: pooled broker connections are dropped, so sending after a
    reconfiguration goes to the new broker.
    """
    settings = settings or get_settings()
    celery_app.conf.update(celery_config(settings))
    # Connections and producers are pooled per app; forget them so the new URL is used.
    celery_app.close()
    amqp = celery_app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
    return celery_app


def ensure_configured(celery_app: "Celery") -> "Celery":
    """Reconfigure if the environment now names another broker or job queue than the app uses.

    Called before sending, so a process whose WORKBENCH_BROKER_URL changed after the app was first
    configured (serve starting its embedded Redis, a test pointing at its own queue) sends to the
    broker the environment names. Cheap: `get_settings()` only reads environment variables.
    """
    wanted = celery_config(get_settings())
    conf = celery_app.conf
    if conf.broker_url != wanted["broker_url"] or conf.task_default_queue != wanted["task_default_queue"]:
        configure(celery_app)
    return celery_app
