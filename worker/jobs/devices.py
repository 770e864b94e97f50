"""Device slots: what a worker declares, which slots a job holds, and picking free ones at claim.

A slot is one device a job process runs on:
  - on a GPU worker, one CUDA device, named as CUDA_VISIBLE_DEVICES names it ("0", "3", "GPU-<uuid>"): the
    worker narrows its own CUDA_VISIBLE_DEVICES to its slots at start, so inside the worker (and every
    process it forks) slot number i of the declaration is torch's `cuda:i`;
  - on a CPU worker, one process's share of the cores: "cpu0", "cpu1", ... (`--processes N`).

A worker declares its slots with `workbench worker --gpus 0,1,2,3` (default: the GPUs CUDA_VISIBLE_DEVICES and
NVML show, counted without initialising CUDA) or `--processes N` (default 1 on a machine without a GPU), and
passes them to its pool processes in WORKBENCH_WORKER_DEVICES (`declared_slots`). A job asks for `devices: N`
(`worker.jobs.params.PLACEMENT_PARAMS`); the claim (`worker.jobs.lifecycle.claim_next_job`) takes it only when
N of the worker's slots are free, and records which in `jobs.assigned_devices`. Which slots are held is read
from the database (running jobs whose worker_host is one of this worker's processes, and the multi-node jobs it
follows as a node k > 0, whose slots its `job_nodes` row records: `held_slots`), so it stays
right whatever process or thread ran them; the worker's processes pick under one file lock (`slot_lock`).

The pure functions here (parse, free, pick) have no database and no torch; `visible_gpus` imports torch only
to count devices, which does not initialise CUDA when NVML answers (DESIGN: never touch CUDA at import).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

DEVICES_ENV = "WORKBENCH_WORKER_DEVICES"  # this worker's slots, comma-separated, for its pool processes
CPU_SLOT_PREFIX = "cpu"
DEFAULT_SLOTS = ("cpu0",)  # a process that declared nothing (a test calling the runner): one CPU slot
MAX_SLOTS = 64  # the `devices` param's bound too: no machine has more
_GPU_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")  # an index, GPU-<uuid> or MIG-<uuid>


class DeviceDeclarationError(ValueError):
    """A worker's --gpus / --processes / --concurrency do not make sense together; the message says why."""


# ----------------------------------------------------------------------------- what a worker has

def cpu_slots(processes: int) -> list[str]:
    """["cpu0", ..., "cpu<N-1>"]."""
    if isinstance(processes, bool) or not isinstance(processes, int) or not 1 <= processes <= MAX_SLOTS:
        raise DeviceDeclarationError(f"--processes must be a whole number from 1 to {MAX_SLOTS}, got {processes!r}")
    return [f"{CPU_SLOT_PREFIX}{index}" for index in range(processes)]


def parse_gpus(text: str) -> list[str]:
    """The GPUs of `--gpus 0,1,2,3` (or GPU-/MIG- UUIDs), each once, in the order given."""
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if not names:
        raise DeviceDeclarationError("--gpus needs at least one GPU, e.g. --gpus 0,1")
    for name in names:
        if not _GPU_NAME.match(name) or name.startswith(CPU_SLOT_PREFIX) and name[len(CPU_SLOT_PREFIX):].isdigit():
            raise DeviceDeclarationError(f"--gpus: {name!r} is not a GPU index or UUID (as nvidia-smi -L shows them)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DeviceDeclarationError(f"--gpus names {', '.join(repeated)} twice")
    if len(names) > MAX_SLOTS:
        raise DeviceDeclarationError(f"--gpus names {len(names)} GPUs; at most {MAX_SLOTS}")
    return names


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (its entries, or 0..n-1 when unset),
    without initialising CUDA: torch counts them through NVML, which keeps a later fork able to use CUDA."""
    environ = os.environ if environ is None else environ
    try:
        import torch

        count = torch.cuda.device_count()  # NVML first; torch.cuda.is_available() would initialise the driver
    except Exception:  # a broken driver: a CPU worker
        count = 0
    if count <= 0:
        return []
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(index) for index in range(count)]
    return [part.strip() for part in listed.split(",") if part.strip()][:count]


def declare_slots(gpus: str | None = None, processes: int | None = None, concurrency: int | None = None,
                  detected_gpus: Sequence[str] | None = None) -> list[str]:
    """A worker's slots from its options: `--gpus`, else `--processes`, else the GPUs it sees (`detected_gpus`,
    default `visible_gpus()`), else one CPU slot per `--concurrency` (what `--pool prefork --concurrency N` meant
    before slots existed), else one CPU slot."""
    if gpus is not None and processes is not None:
        raise DeviceDeclarationError("give --gpus (a GPU worker) or --processes (a CPU worker), not both")
    if gpus is not None:
        slots = parse_gpus(gpus)
    elif processes is not None:
        slots = cpu_slots(processes)
    else:
        detected = list(visible_gpus() if detected_gpus is None else detected_gpus)
        slots = detected or cpu_slots(concurrency or 1)
    if concurrency is not None and not 1 <= concurrency <= len(slots):
        raise DeviceDeclarationError(
            f"--concurrency {concurrency}: this worker has {len(slots)} device slot{'s' if len(slots) != 1 else ''} "
            f"({', '.join(slots)}), so it runs 1 to {len(slots)} jobs at once; leave --concurrency out to run one "
            "job per slot")
    return slots


def is_gpu(slot: str) -> bool:
    """A CUDA device, not a CPU process slot."""
    return not (slot.startswith(CPU_SLOT_PREFIX) and slot[len(CPU_SLOT_PREFIX):].isdigit())


def format_slots(slots: Sequence[str]) -> str:
    """What WORKBENCH_WORKER_DEVICES holds: "0,1,2,3" or "cpu0,cpu1"."""
    return ",".join(slots)


def declared_slots(environ: Mapping[str, str] | None = None) -> list[str]:
    """The slots this worker declared at start (WORKBENCH_WORKER_DEVICES), else one CPU slot."""
    environ = os.environ if environ is None else environ
    listed = [part.strip() for part in environ.get(DEVICES_ENV, "").split(",") if part.strip()]
    return listed or list(DEFAULT_SLOTS)


def add_device_arguments(parser) -> None:
    """--gpus and --processes (an argparse parser's), shared by `workbench worker` and
    `python -m worker.runtime.main`."""
    slots = parser.add_mutually_exclusive_group()
    slots.add_argument("--gpus", default=None, metavar="0,1,2,3",
                       help="the GPUs this worker gives jobs, as nvidia-smi numbers them (replaces "
                            "CUDA_VISIBLE_DEVICES); default: every GPU CUDA_VISIBLE_DEVICES shows")
    slots.add_argument("--processes", type=int, default=None, metavar="N",
                       help="on a machine without a GPU: CPU job processes (device slots), each with its share "
                            "of the cores (default 1)")


# ----------------------------------------------------------------------------- which are free, which to take

def free_slots(declared: Sequence[str], held: Iterable[Sequence[str] | None]) -> list[str]:
    """The declared slots no running job holds, in declared order. `held`: each running job's assigned slots;
    None (a row claimed before slots were recorded) holds one slot, the first still free."""
    free = list(declared)
    unnamed = 0
    for slots in held:
        if slots is None:
            unnamed += 1
            continue
        for slot in slots:
            if slot in free:
                free.remove(slot)
    return free[unnamed:]


def pick_slots(free: Sequence[str], count: int) -> list[str] | None:
    """`count` slots for a job out of `free` (the first ones, so jobs pack onto the low devices and leave the
    high ones together for a larger job), or None when fewer are free."""
    if count < 1 or count > len(free):
        return None
    return list(free[:count])


def requested_devices(params: Mapping[str, Any] | None) -> int:
    """How many slots a job's params ask for on one worker: `devices`, 1 for kinds without it."""
    value = (params or {}).get("devices", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def assigned_devices(job: Any, declared: Sequence[str] | None = None) -> list[str]:
    """The slots the job's claim gave it (`jobs.assigned_devices`). A row with none recorded (claimed before they
    were, or by a caller that keeps no slots) holds its `devices` count of this worker's first slots (`declared`,
    default `declared_slots()`), CPU slots added where the worker declared fewer: one for the rows of before."""
    recorded = getattr(job, "assigned_devices", None)
    if recorded:
        return [str(slot) for slot in recorded]
    count = getattr(job, "devices", None) or requested_devices(getattr(job, "params", None))
    slots = list(declared or declared_slots())[:count]
    spare = (slot for slot in cpu_slots(MAX_SLOTS) if slot not in slots)
    return slots + [next(spare) for _ in range(count - len(slots))]


def cuda_visible_devices(slots: Sequence[str]) -> str | None:
    """What CUDA_VISIBLE_DEVICES should hold for a process that runs on `slots` ("0,1"); None for CPU slots."""
    gpus = [slot for slot in slots if is_gpu(slot)]
    return ",".join(gpus) if gpus else None


def torch_device(slot: str, declared: Sequence[str] | None = None) -> str:
    """The torch device a job run in this worker process uses for `slot`: "cuda:<its place in the worker's
    declaration>" (the worker narrowed CUDA_VISIBLE_DEVICES to its slots), or "cpu"."""
    if not is_gpu(slot):
        return "cpu"
    declared = list(declared or declared_slots())
    return f"cuda:{declared.index(slot) if slot in declared else 0}"


def job_device(requested: str | None, slots: Sequence[str], declared: Sequence[str] | None = None) -> str | None:
    """The device a single-process job runs on: its requested device (the job's pin or WORKBENCH_DEVICE) unless
    that leaves the GPU to chance ("auto", "cuda" or nothing) and the job holds a GPU slot: then that slot's."""
    chosen = str(requested or "auto").lower()
    if chosen not in ("auto", "cuda") or not slots or not is_gpu(slots[0]):
        return requested
    return torch_device(slots[0], declared)


# ----------------------------------------------------------------------------- one worker's processes agree

def node_of(worker_host: str) -> str:
    """The Celery node a job's worker_host (`<node name>:<pid>`) belongs to: the worker, whichever process."""
    return worker_host.rsplit(":", 1)[0] if ":" in worker_host else worker_host


@contextlib.contextmanager
def slot_lock(node: str, directory: Path | None = None) -> Iterator[None]:
    """Hold an exclusive file lock named after `node` (this worker): its pool processes or threads then pick
    slots one at a time, so two never take the same free slot. The lock goes with the process (a killed
    child never leaves it held). Where flock does not exist, nothing is locked."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: one job per worker is all that is safe there
        yield
        return
    digest = hashlib.sha256(node.encode()).hexdigest()[:20]
    path = (directory or Path(tempfile.gettempdir())) / f"workbench-slots-{digest}.lock"
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- what the workers have (presence)

def worker_slots(worker: Mapping[str, Any]) -> list[str]:
    """The slots a `seen_workers` entry reported ("devices"); a worker from before slots has one."""
    devices = worker.get("devices")
    return [str(slot) for slot in devices] if isinstance(devices, list) and devices else list(DEFAULT_SLOTS)


def largest_worker(workers: Sequence[Mapping[str, Any]]) -> tuple[int, str | None]:
    """(the most slots any of the live `workers` has, its node name); (0, None) when none is alive."""
    alive = [worker for worker in workers if worker.get("alive")]
    if not alive:
        return 0, None
    best = max(alive, key=lambda worker: len(worker_slots(worker)))
    return len(worker_slots(best)), best.get("node")


def devices_refusal(asked: int, workers: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a job asking for `asked` devices cannot run on any live worker ("4 asked, the largest worker has 2
    (workbench-1@a)"), or None when one has enough, or when none is alive (the job then waits: `waiting_note`)."""
    most, node = largest_worker(workers)
    if most == 0 or asked <= most:
        return None
    return (f"{asked} asked, the largest worker has {most} ({node}); start a worker with more "
            f"(workbench worker --gpus ..., or --processes N on a CPU machine) or ask for {most} or fewer")


def waiting_note(asked: int) -> str:
    """What a job that no live worker can run yet says it waits for."""
    return (f"no worker is alive: the job waits in the queue for a worker with {asked} free "
            f"device{'s' if asked != 1 else ''} (workbench worker --gpus ... or --processes N)")


def holders(declared: Sequence[str], running: Iterable[tuple[int, Sequence[str] | None]]) -> dict[str, int | None]:
    """Each declared slot -> the id of the running job that holds it, or None when it is free. `running`:
    (job id, its assigned slots) of this worker's running jobs."""
    table: dict[str, int | None] = {slot: None for slot in declared}
    unnamed: list[int] = []
    for job_id, slots in running:
        if slots is None:
            unnamed.append(job_id)
            continue
        for slot in slots:
            if slot in table:
                table[slot] = job_id
    for job_id in unnamed:  # rows from before slots were recorded: the first free slots
        free = next((slot for slot, holder in table.items() if holder is None), None)
        if free is not None:
            table[free] = job_id
    return table
