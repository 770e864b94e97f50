"""Start a worker: `run_worker()` for `workbench worker`, and `python -m worker.runtime.main`.

A worker consumes `run_job` messages from its queues and runs one job per slot. GPU workers use
the solo pool with concurrency 1, one worker process per GPU (set CUDA_VISIBLE_DEVICES per
process): training saturates a GPU on its own, the solo pool runs the job in the main process
(so a warm shutdown can ask it to checkpoint and stop, see `worker.runtime.celery_app`), and nothing is
forked after CUDA might have been initialised. CPU-only jobs (prepare, train_tokenizer) may use
`--pool prefork --concurrency N`.

Each worker also runs the reaper thread (see reaper.py), so jobs of a worker killed with
`kill -9` are requeued by any surviving worker, even when `serve` is not running, and beats its
presence into the broker (`worker.jobs.presence.WorkerPresence`) for /api/health. Solo and threads workers also
probe what their device does for the standard model shapes and for shapes estimates ask about
(`worker.jobs.throughput.Prober`, a background thread that waits while a job runs), and publish the probes with
their presence, so the Train forms' time estimates are what this device measured.

    python -m worker.runtime.main --queues default --concurrency 1 --pool solo --loglevel info
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Iterable, Sequence

from db.settings import get_settings
from worker.runtime import tasks  # noqa: F401  (registers the run_job task with the app)
from llm.threads import JOB_PROCESSES_ENV
from worker.jobs.messages import configure
from worker.runtime.celery_app import app
from worker.jobs.presence import WorkerPresence, worker_capacity
from worker.jobs.throughput import Prober


def default_node_name() -> str:
    """`workbench-<pid>@<host>`: unique per process, so two workers on one machine (or a restarted one
    while the old one's entry lingers) never collide; `serve` finds its worker's jobs by it."""
    return f"workbench-{os.getpid()}@{socket.gethostname()}"


def worker_argv(queues: str | Iterable[str] = "default", concurrency: int = 1, pool: str = "solo",
                loglevel: str = "info", hostname: str | None = None) -> list[str]:
    """The `celery worker` command line for these options."""
    queue_list = queues if isinstance(queues, str) else ",".join(queues)
    hostname = hostname or default_node_name()
    return [
        "worker",
        f"--loglevel={loglevel.upper()}",
        f"--queues={queue_list}",
        f"--concurrency={int(concurrency)}",
        f"--pool={pool}",
        f"--hostname={hostname}",
        # Gossip, mingle and event heartbeats coordinate Celery workers with each other; our jobs
        # coordinate through the database, so they would only add broker traffic and start-up delay.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def run_worker(queues: str | Iterable[str] = "default", concurrency: int = 1, pool: str = "solo",
               loglevel: str = "info", hostname: str | None = None) -> None:
    """Run a Celery worker in this process until it is stopped (blocks). Starts the reaper thread."""
    from worker.runtime.reaper import start_reaper_thread

    settings = get_settings()
    if not settings.broker_url:
        raise SystemExit("WORKBENCH_BROKER_URL is not set: a worker needs the broker URL of the running "
                         "`workbench serve` (printed at its start) or of your Redis, e.g. redis://localhost:6379/0")
    configure(app, settings)
    hostname = hostname or default_node_name()
    queue_names = tuple(queues.split(",")) if isinstance(queues, str) else tuple(queues)
    # Each job process takes cores ÷ this many torch threads (llm/threads.py); prefork children inherit it. A
    # launcher that knows of more processes on the machine (serve's chat beside its worker) sets it first.
    os.environ.setdefault(JOB_PROCESSES_ENV, str(max(1, concurrency)))
    reaper = start_reaper_thread(settings)
    # Seen by /api/health: this worker is alive (the job heartbeats only exist while a job runs); its
    # capacity is what the submit-time fit check compares a job's memory estimate with.
    capacity = worker_capacity(probe_gpus=pool != "prefork")
    presence = WorkerPresence(app.conf.broker_url, hostname, queue_names, settings.heartbeat_seconds,
                              settings.stale_after_seconds, capacity=capacity).start()
    # Not in a prefork parent: torch's threads (and CUDA) started before the fork are unusable in its children.
    prober = (Prober(settings.data_dir, capacity, app.conf.broker_url, queue_names, settings.device or "auto").start()
              if pool != "prefork" and settings.throughput_probes else None)
    try:
        app.worker_main(worker_argv(queue_names, concurrency, pool, loglevel, hostname))
    finally:
        if prober is not None:
            prober.stop()
        presence.stop()
        reaper.stop()


def main(argv: Sequence[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m worker.runtime.main", description="Run a workbench job worker.")
    parser.add_argument("--queues", default=",".join(settings.worker_queues),
                        help="comma-separated queues to consume (default: WORKBENCH_WORKER_QUEUES or 'default')")
    parser.add_argument("--concurrency", type=int, default=1, help="job slots (default 1; keep 1 per GPU)")
    parser.add_argument("--pool", default="solo", choices=("solo", "prefork", "threads"),
                        help="Celery pool (default solo: what GPU workers need)")
    parser.add_argument("--loglevel", default="info")
    parser.add_argument("--hostname", default=None, help="Celery node name (default workbench-<pid>@<host>)")
    args = parser.parse_args(argv)
    run_worker(args.queues, args.concurrency, args.pool, args.loglevel, args.hostname)


if __name__ == "__main__":
    main()
