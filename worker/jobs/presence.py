"""Which workers are alive and what each has: presence records in the broker's Redis.

Workers themselves beat too (`WorkerPresence`, started by `worker.runtime.main`): every `heartbeat_seconds`
each worker process stores a small record in the broker's Redis, under
`workbench:worker:<queue>:<node name>` for each queue it consumes, with a time to live of
`PRESENCE_TTL_FACTOR` × `stale_after_seconds`. `/api/health` lists them (`seen_workers`): a record
older than `stale_after_seconds` is a worker that stopped (killed, hung, its machine gone) and is
reported as down until it expires; a worker that stops cleanly deletes its record. The broker holds
them rather than the database because they are as short-lived as the broker's messages and need no
migration; a restarted Redis is refilled by the next beats.

Each record also carries the worker's capacity (`worker_capacity`: its machine's total RAM and each
visible GPU's total memory), which the submit-time fit check (`worker.jobs.fit`) compares a job's
memory estimate with, instead of the web machine's, and its device slots (`worker.jobs.devices`: "0,1" GPUs or
"cpu0" process slots), which the submit check compares a job's `devices` with and /api/health shows beside the
running jobs that hold them (the database says which).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone

logger = logging.getLogger(__name__)

# A health check, a fit check or a reaper sweep must not hang on a dead broker.
SOCKET_TIMEOUT_S = 2.0


def redis_client(broker_url: str):
    """A short-timeout Redis client for `broker_url` (closed by the caller)."""
    import redis

    return redis.Redis.from_url(broker_url, socket_connect_timeout=SOCKET_TIMEOUT_S,
                                socket_timeout=SOCKET_TIMEOUT_S)


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
                 stale_after_seconds: float, capacity: dict | None = None, devices: list[str] | None = None):
        self.broker_url = broker_url
        self.capacity = capacity
        self.devices = devices
        self.node_name = node_name
        self.queues = tuple(queues)
        self.interval_s = interval_s
        self.ttl_s = max(1, int(PRESENCE_TTL_FACTOR * stale_after_seconds))
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workbench-worker-presence", daemon=True)

    def start(self) -> "WorkerPresence":
        """Beat once now (the worker is listed as soon as this returns), then every `interval_s`."""
        self.beat()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def beat(self) -> bool:
        """Store one presence record per queue; False (logged) when the broker is unreachable."""
        record = json.dumps({"node": self.node_name, "pid": os.getpid(), "host": socket.gethostname(),
                             "queues": list(self.queues), "started_at": self.started_at,
                             "capacity": self.capacity, "devices": self.devices,
                             "last_heartbeat": datetime.now(timezone.utc).isoformat()})
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
    report one), devices (its device slots, None from a worker of before them). Raises when the broker is
    unreachable.
    """
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
                        "capacity": record.get("capacity"), "devices": record.get("devices")})
    workers.sort(key=lambda worker: worker["seconds_since"])
    return workers


# ----------------------------------------------------------------------------- job beats beside the database

JOB_BEAT_KEY_PREFIX = "workbench:job:"


def job_beat_key(queue: str, job_id: int) -> str:
    """Per queue: installs (and test runs) that share a Redis have queues of their own and reuse job ids."""
    return f"{JOB_BEAT_KEY_PREFIX}{queue}:{job_id}:beat"


def stamp_job_beat(broker_url: str, queue: str, job_id: int, attempt: int, ttl_s: float) -> bool:
    """Record in the broker that attempt `attempt` of job `job_id` is alive now (what `JobHeartbeat` does
    beside stamping the database, so a database that is stalled or locked does not make a living job look
    dead); False when the broker is unreachable."""
    client = redis_client(broker_url)
    try:
        client.set(job_beat_key(queue, job_id), f"{attempt} {time.time():.3f}", ex=max(1, int(ttl_s)))
        return True
    except Exception as error:
        logger.info("job %s beat not stored in the broker: %s", job_id, error)
        return False
    finally:
        client.close()


def jobs_beating(broker_url: str, queue: str, attempts: dict[int, int], within_s: float) -> set[int]:
    """Of `attempts` ({job id: attempt}), the jobs whose attempt beat in the broker within `within_s`; an empty
    set when the broker cannot be read (the caller then judges by the database alone)."""
    if not attempts:
        return set()
    client = redis_client(broker_url)
    try:
        ids = list(attempts)
        values = client.mget([job_beat_key(queue, job_id) for job_id in ids])
    except Exception as error:
        logger.info("job beats not read from the broker: %s", error)
        return set()
    finally:
        client.close()
    now, beating = time.time(), set()
    for job_id, value in zip(ids, values):
        try:
            attempt, at = (value or b"").decode().split()
            if int(attempt) == attempts[job_id] and now - float(at) <= within_s:
                beating.add(job_id)
        except ValueError:
            continue
    return beating
