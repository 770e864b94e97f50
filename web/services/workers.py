"""The job workers and their device slots, for /api/health and the Jobs tab: what each live worker declared (its
presence beat in the broker, `worker.jobs.presence`) joined with which running job holds each slot (the database,
`worker.jobs.lifecycle.held_slots`)."""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import Session

from db.settings import Settings
from worker.jobs.devices import holders, worker_slots
from worker.jobs.lifecycle import held_slots
from worker.jobs.messages import broker_url_of, job_queue_of

log = logging.getLogger(__name__)

PRESENCE_CACHE_S = 5.0  # the Jobs tab asks every tick of every open browser; the broker is read this often at most
_cache: dict[tuple[str, str], tuple[float, list[dict]]] = {}


def with_device_jobs(session: Session, workers: list[dict]) -> list[dict]:
    """`workers` (`seen_workers` entries), each with "devices" (its slots) and "device_jobs" ({slot: the id of the
    running job holding it, or None when free}); a worker of before slots shows its one slot."""
    shown = []
    for worker in workers:
        slots = worker_slots(worker)
        running = held_slots(session, worker["node"]) if worker.get("node") else []
        shown.append({**worker, "devices": slots, "device_jobs": holders(slots, running)})
    session.commit()  # no read transaction held
    return shown


def worker_devices(session: Session, settings: Settings) -> list[dict]:
    """The workers of the job queue seen lately (`with_device_jobs`), newest beat first; [] when the broker cannot
    be read."""
    from worker.jobs.presence import seen_workers

    key = (broker_url_of(settings), job_queue_of(settings))
    cached = _cache.get(key)
    if cached is None or time.monotonic() - cached[0] > PRESENCE_CACHE_S:
        try:
            workers = seen_workers(key[0], key[1], settings.stale_after_seconds)
        except Exception as error:  # the broker is down: /api/health says so; the tab shows no workers
            log.info("workers not read from the broker: %s", error)
            workers = []
        cached = _cache[key] = (time.monotonic(), workers)
    return with_device_jobs(session, cached[1])
