"""Start a worker: `run_worker()` for `workbench worker`, and `python -m worker.runtime.main`.

A worker declares its device slots (`worker.jobs.devices`): `--gpus 0,1,2,3` (default: the GPUs
CUDA_VISIBLE_DEVICES shows, counted through NVML without initialising CUDA) or, on a machine without a GPU,
`--processes N` (default 1). It consumes `run_job` messages from its queues and runs up to one job per
slot at once (`--concurrency`, default: its slot count); a job takes as many slots as its `devices`, and the
claim takes only a job that fits the slots free now (`worker.jobs.lifecycle.claim_next_job`).

Pools: one slot (the default on a CPU machine, or a GPU worker started with one GPU) keeps the solo pool:
the job runs in the main process (so a warm shutdown can ask it to checkpoint and stop, see
`worker.runtime.tasks`), and nothing is forked after CUDA might have been initialised. Several slots use the
prefork pool with one child per slot: each job gets a process of its own (its own torch threads, random
generators and CUDA context; a job killed for memory takes nobody else down), the parent never initialises
CUDA (its GPUs are counted through NVML, their memory read by a short subprocess), and the warm shutdown's flag
is shared with the children (`heartbeat.share_shutdown_flag`). A single-device job on a GPU slot runs on that
GPU (`worker.jobs.devices.job_device`).

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
import logging
import os
import socket
from collections.abc import Iterable, Sequence

from db.settings import get_settings
from worker.runtime import tasks  # noqa: F401  (registers the run_job task with the app)
from llm.threads import JOB_PROCESSES_ENV
from worker.jobs import devices
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


def worker_layout(gpus: str | None = None, processes: int | None = None, concurrency: int | None = None,
                  pool: str | None = None) -> tuple[list[str], int, str]:
    """(device slots, concurrency, pool) for these options: the slots `devices.declare_slots` gives, one job per
    slot unless `concurrency` says fewer, the solo pool for one job at a time and prefork for more (threads
    only when asked). Raises DeviceDeclarationError for options that do not fit together."""
    slots = devices.declare_slots(gpus, processes, concurrency)
    concurrency = concurrency or len(slots)
    pool = pool or ("solo" if concurrency == 1 else "prefork")
    if pool == "solo" and concurrency != 1:
        raise devices.DeviceDeclarationError(f"the solo pool runs one job at a time, not {concurrency}: "
                                             "leave --pool out (prefork runs one job per slot) or give --concurrency 1")
    return slots, concurrency, pool


def gpu_memory_of(slots: list[str]) -> list[int]:
    """Each GPU slot's total memory, read in a short subprocess so this process never initialises CUDA (a prefork
    parent must not: its children could not use it); [] when it cannot be read."""
    import json
    import subprocess
    import sys

    code = ("import json, torch; print(json.dumps([torch.cuda.get_device_properties(i).total_memory "
            "for i in range(torch.cuda.device_count())]))")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "CUDA_VISIBLE_DEVICES": devices.cuda_visible_devices(slots) or ""})
        return [int(total) for total in json.loads(done.stdout.strip().splitlines()[-1])]
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return []


def run_worker(queues: str | Iterable[str] = "default", concurrency: int | None = None, pool: str | None = None,
               loglevel: str = "info", hostname: str | None = None, gpus: str | None = None,
               processes: int | None = None) -> None:
    """Run a Celery worker in this process until it is stopped (blocks). Starts the reaper thread.

    `gpus` ("0,1,2,3") or `processes` (N) declare its device slots (see `worker_layout`); by default the GPUs it
    sees, else one CPU slot per `concurrency` (default 1): the solo pool with one slot, as before slots existed.
    """
    from worker.runtime.heartbeat import share_shutdown_flag
    from worker.runtime.reaper import start_reaper_thread

    settings = get_settings()
    if not settings.broker_url:
        raise SystemExit("WORKBENCH_BROKER_URL is not set: a worker needs the broker URL of the running "
                         "`workbench serve` (printed at its start) or of your Redis, e.g. redis://localhost:6379/0")
    try:
        slots, concurrency, pool = worker_layout(gpus, processes, concurrency, pool)
    except devices.DeviceDeclarationError as error:
        raise SystemExit(f"workbench worker: {error}") from None
    # What the pool processes claim with (declared_slots), and the GPUs this process and its children see: the
    # declared ones, so slot i is torch's cuda:i (devices.torch_device) and a launcher narrows by their names.
    os.environ[devices.DEVICES_ENV] = devices.format_slots(slots)
    gpu_slots = devices.cuda_visible_devices(slots)
    if gpu_slots:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_slots
        seen = devices.visible_gpus()  # through NVML: CUDA stays uninitialised here
        if len(seen) < len(slots):
            raise SystemExit(f"workbench worker: --gpus {gpu_slots}: PyTorch sees {len(seen)} of these GPUs on this "
                             "machine (nvidia-smi -L lists them; a CPU build of torch sees none); on a machine "
                             "without a GPU use --processes N")
    if pool == "prefork":
        share_shutdown_flag()  # a warm shutdown reaches the jobs in the children (before they are forked)
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
    if gpu_slots and pool == "prefork":
        capacity["gpu_memory_bytes"] = gpu_memory_of(slots)
    presence = WorkerPresence(app.conf.broker_url, hostname, queue_names, settings.heartbeat_seconds,
                              settings.stale_after_seconds, capacity=capacity, devices=slots).start()
    logging.getLogger(__name__).info("worker %s: device slots %s, %s job%s at once (%s pool)", hostname,
                                     devices.format_slots(slots), concurrency, "s" if concurrency > 1 else "", pool)
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
    devices.add_device_arguments(parser)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="jobs at once (default: one per device slot)")
    parser.add_argument("--pool", default=None, choices=("solo", "prefork", "threads"),
                        help="Celery pool (default: solo for one job at a time, prefork for more)")
    parser.add_argument("--loglevel", default="info")
    parser.add_argument("--hostname", default=None, help="Celery node name (default workbench-<pid>@<host>)")
    args = parser.parse_args(argv)
    run_worker(args.queues, args.concurrency, args.pool, args.loglevel, args.hostname, args.gpus, args.processes)



if __name__ == "__main__":
    main()
