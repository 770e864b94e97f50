"""Heartbeats and stop flags for the job a worker is running.

While a job runs, `JobHeartbeat` (a daemon thread) stamps `jobs.heartbeat_at` every
`heartbeat_seconds` and copies the job's `cancel_requested` column into a `threading.Event`.
The training loop's `should_stop()` only reads events, so checking it every step costs nothing
and never touches the database. Three things make a job stop:

  - `cancelled`: a user asked (`cancel_requested` became true);
  - `lost`: the row no longer belongs to this attempt (a reaper took the job back after our
    heartbeats stopped reaching the database, and another worker may already run it), so this
    worker must stop writing and leave the job alone;
  - worker shutdown: Celery's warm shutdown (SIGTERM) on this worker; the job checkpoints and
    goes back to the queue (see `worker.celery_app`).

The thread uses its own short sessions: a SQLAlchemy session is not thread-safe, and the job's
own session is busy writing metrics.

Workers themselves beat too (`WorkerPresence`, started by `worker.main`): every `heartbeat_seconds`
each worker process stores a small record in the broker's Redis, under
`workbench:worker:<queue>:<node name>` for each queue it consumes, with a time to live of
`PRESENCE_TTL_FACTOR` × `stale_after_seconds`. `/api/health` lists them (`seen_workers`): a record
older than `stale_after_seconds` is a worker that stopped (killed, hung, its machine gone) and is
reported as down until it expires; a worker that stops cleanly deletes its record. The broker holds
them rather than the database because they are as short-lived as the broker's messages and need no
migration; a restarted Redis is refilled by the next beats.

Each record also carries the worker's capacity (`worker_capacity`: its machine's total RAM and each
visible GPU's total memory), which the submit-time fit check (`worker.kinds.fit`) compares a job's
memory estimate with, instead of the web machine's.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from datetime import datetime, timezone

from sqlalchemy import select, update

from db.models import Job, JobStatus, utcnow

logger = logging.getLogger(__name__)

# Set when this worker process is shutting down (Celery's worker_shutting_down signal).
_worker_shutdown = threading.Event()


def request_worker_shutdown() -> None:
    """Ask the job running in this process to checkpoint and stop, because the worker is stopping."""
    _worker_shutdown.set()


def worker_shutdown_requested() -> bool:
    return _worker_shutdown.is_set()


class JobHeartbeat:
    """Stamp heartbeats for attempt `attempt` of job `job_id` and watch its cancel flag.

    Use as a context manager around the job's work::

        with JobHeartbeat(job.id, job.attempts, settings.heartbeat_seconds) as heartbeat:
            pretrain(..., should_stop=heartbeat.should_stop)
    """

    def __init__(self, job_id: int, attempt: int, interval_s: float, database_url: str | None = None):
        self.job_id = job_id
        self.attempt = attempt
        self.interval_s = interval_s
        self.database_url = database_url
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-job-{job_id}", daemon=True)

    # -- what the job reads

    def should_stop(self) -> bool:
        """True when the job must checkpoint and stop (cancelled, lost, or worker shutting down)."""
        return self.cancelled.is_set() or self.lost.is_set() or _worker_shutdown.is_set()

    @property
    def stop_reason(self) -> str | None:
        if self.lost.is_set():
            return "lost"
        if self.cancelled.is_set():
            return "cancelled"
        if _worker_shutdown.is_set():
            return "shutdown"
        return None

    # -- lifecycle

    def start(self) -> "JobHeartbeat":
        self.beat()  # pick up a cancel that arrived between the claim and now
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(5.0, 2 * self.interval_s))

    def __enter__(self) -> "JobHeartbeat":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def beat(self) -> None:
        """One heartbeat: stamp heartbeat_at (fenced by attempt) and read cancel_requested."""
        from db.session import session_scope

        try:
            with session_scope(self.database_url) as session:
                # Fenced: only while the job is running *this* attempt. If the update matches no row,
                # the job was taken away from us (reaped and reclaimed, or finished elsewhere).
                stamped = session.execute(
                    update(Job).where(Job.id == self.job_id, Job.attempts == self.attempt,
                                      Job.status == JobStatus.running)
                    .values(heartbeat_at=utcnow())
                ).rowcount
                cancel_requested = session.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
        except Exception as error:  # a DB hiccup must not kill the job; the next beat tries again
            logger.warning("heartbeat for job %s failed: %s", self.job_id, error)
            return
        if not stamped:
            if not self.lost.is_set():
                logger.warning("job %s attempt %s is no longer ours; stopping it", self.job_id, self.attempt)
            self.lost.set()
        if cancel_requested:
            self.cancelled.set()


# ----------------------------------------------------------------------------- worker presence

PRESENCE_KEY_PREFIX = "workbench:worker:"
PRESENCE_TTL_FACTOR = 10  # a stopped worker stays listed (as down) this many stale periods


def presence_key(queue: str, node_name: str) -> str:
    return f"{PRESENCE_KEY_PREFIX}{queue}:{node_name}"


def worker_capacity(probe_gpus: bool) -> dict:
    """What this worker has for a job: {"ram_bytes": total RAM, "gpu_memory_bytes": [total per visible GPU]}.

    Totals, not what is free now: a job that fits waits for the one running before it. GPUs are probed
    only when `probe_gpus` (the solo and threads pools): asking CUDA initialises it in this process, and a
    prefork pool forks its children afterwards, which then cannot use CUDA (prefork runs CPU jobs only).
    """
    import psutil

    gpus: list[int] = []
    if probe_gpus:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_properties(index).total_memory
                    for index in range(torch.cuda.device_count())]
    return {"ram_bytes": psutil.virtual_memory().total, "gpu_memory_bytes": gpus}


class WorkerPresence:
    """Beat this worker's presence (and its `capacity`, see `worker_capacity`) into the broker every
    `interval_s` (a daemon thread) until `stop()`."""

    def __init__(self, broker_url: str, node_name: str, queues: tuple[str, ...], interval_s: float,
                 stale_after_seconds: float, capacity: dict | None = None):
        self.broker_url = broker_url
        self.capacity = capacity
        self.node_name = node_name
        self.queues = tuple(queues)
        self.interval_s = interval_s
        self.ttl_s = max(1, int(PRESENCE_TTL_FACTOR * stale_after_seconds))
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workbench-worker-presence", daemon=True)

    def start(self) -> "WorkerPresence":
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.beat()
            if self._stop.wait(self.interval_s):
                return

    def beat(self) -> bool:
        """Store one presence record per queue; False (logged) when the broker is unreachable."""
        from worker.broker_state import redis_client

        record = json.dumps({"node": self.node_name, "pid": os.getpid(), "host": socket.gethostname(),
                             "queues": list(self.queues), "started_at": self.started_at,
                             "capacity": self.capacity, "last_heartbeat": datetime.now(timezone.utc).isoformat()})
        client = redis_client(self.broker_url)
        try:
            for queue in self.queues:
                client.set(presence_key(queue, self.node_name), record, ex=self.ttl_s)
            return True
        except Exception as error:  # the broker is restarting; the next beat refills it
            logger.info("worker presence not stored (broker unreachable): %s", error)
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Stop beating and remove our records: a worker that stops cleanly is not a worker that died."""
        from worker.broker_state import redis_client

        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        client = redis_client(self.broker_url)
        try:
            client.delete(*(presence_key(queue, self.node_name) for queue in self.queues))
        except Exception:
            pass
        finally:
            client.close()


def seen_workers(broker_url: str, queue: str, stale_after_seconds: float) -> list[dict]:
    """The workers of `queue` that beat recently enough to be listed, newest beat first.

    Each: node, host, pid, started_at, last_heartbeat (ISO), seconds_since (float), alive (a beat
    within `stale_after_seconds`), capacity (`worker_capacity`'s dict, None when the worker did not
    report one). Raises when the broker is unreachable.
    """
    from worker.broker_state import redis_client

    client = redis_client(broker_url)
    try:
        keys = list(client.scan_iter(match=presence_key(queue, "*"), count=200))
        raw_records = client.mget(keys) if keys else []
    finally:
        client.close()
    now = datetime.now(timezone.utc)
    workers = []
    for raw in raw_records:
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            record = json.loads(raw)
            last = datetime.fromisoformat(record["last_heartbeat"])
        except (ValueError, KeyError, TypeError):
            continue
        since = max(0.0, (now - last).total_seconds())
        workers.append({"node": record.get("node"), "host": record.get("host"), "pid": record.get("pid"),
                        "started_at": record.get("started_at"), "last_heartbeat": record["last_heartbeat"],
                        "seconds_since": round(since, 1), "alive": since <= stale_after_seconds,
                        "capacity": record.get("capacity")})
    workers.sort(key=lambda worker: worker["seconds_since"])
    return workers
