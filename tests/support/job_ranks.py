"""The torchrun ranks a worker started for a job on several processes (worker/runtime/launcher.py), found from
/proc: their pids by rank, torchrun's own pid, and waiting for them all to be gone."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.processes import alive, command_line, descendants
from tests.support.worker_processes import WorkerProcess


def rank_pids(worker: WorkerProcess) -> dict[int, int]:
    """{rank: pid} of the worker's torchrun ranks (read from each one's RANK)."""
    found = {}
    for pid in descendants(worker.pid):
        if "worker.runtime.rank_entry" not in command_line(pid):
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        rank = next((int(item[5:]) for item in environ if item.startswith(b"RANK=")), None)
        if rank is not None:
            found[rank] = pid
    return found


def torchrun_pids(worker: WorkerProcess) -> set[int]:
    return {pid for pid in descendants(worker.pid) if "torch.distributed.run" in command_line(pid)}


def wait_gone(pids, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.2)
    return [pid for pid in pids if alive(pid)]
