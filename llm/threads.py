"""How many torch threads a process uses: its share of the machine's cores, decided in one place.

Two processes that each take every core fight over them: on a 2-core machine a tiny pretraining run fell
from ~3,000 to ~350 tokens/s with a chat request stream beside it (issue 20). So every process that runs
jobs takes its share:

    share = cores ÷ processes that run jobs on this machine

  cores       the CPUs this process may run on (its affinity, which containers and `taskset` narrow),
              counted as physical cores when psutil can tell (a hyperthread adds little to a matmul).
  processes   WORKBENCH_JOB_PROCESSES when the launcher says how many job processes it runs (a worker:
              its job slots), else the local world size under `torchrun` (LOCAL_WORLD_SIZE), else 1.

A person's own OMP_NUM_THREADS wins outside torchrun. Under torchrun it does not: torchrun sets
OMP_NUM_THREADS=1 for every rank when it was unset, so there it says nothing about what the person wants.

    thread_budget()            -> ThreadBudget(threads, cores, processes, reason)  (decides, sets nothing)
    apply_thread_budget(log)   sets torch's threads to the budget and says so through `log`
    set_threads(count, reason) sets an explicit count (the web process's chat: WORKBENCH_CHAT_THREADS)
    thread_note()              the last decision, for a training log

Nothing here imports torch at module import: the web process reads it before it needs torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

JOB_PROCESSES_ENV = "WORKBENCH_JOB_PROCESSES"


@dataclass(frozen=True)
class ThreadBudget:
    threads: int
    cores: int
    processes: int
    reason: str  # one phrase a person reads in the log

    def describe(self) -> str:
        return f"torch threads: {self.threads} ({self.reason})"


_last: ThreadBudget | None = None


def machine_cores() -> int:
    """CPUs this process may run on, physical cores when that count is known and smaller."""
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        logical = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or logical
    except ImportError:
        physical = logical
    return max(1, min(logical, physical))


def _positive_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of at least 1, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {raw!r}")
    return value


def under_torchrun() -> bool:
    """torchrun (torch.distributed.elastic) sets TORCHELASTIC_RUN_ID for every rank it starts."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_WORLD_SIZE" in os.environ


def thread_budget() -> ThreadBudget:
    """This process's share of the machine's cores (see the module docstring); decides, sets nothing."""
    cores = machine_cores()
    declared = _positive_int(JOB_PROCESSES_ENV)
    local_ranks = _positive_int("LOCAL_WORLD_SIZE") if under_torchrun() else None
    processes = declared or local_ranks or 1
    explicit = _positive_int("OMP_NUM_THREADS")
    if explicit is not None and not under_torchrun():
        return ThreadBudget(explicit, cores, processes, f"OMP_NUM_THREADS={explicit}")
    threads = max(1, cores // processes)
    if declared:
        who = f"{processes} job process{'es' if processes > 1 else ''} ({JOB_PROCESSES_ENV})"
    elif local_ranks:
        who = f"{processes} torchrun rank{'s' if processes > 1 else ''} on this machine"
    else:
        who = "1 process"
    return ThreadBudget(threads, cores, processes, f"{cores} cores ÷ {who}")


def set_threads(count: int, reason: str) -> ThreadBudget:
    """Set torch's intra-op threads (process-wide) and remember why, for `thread_note`."""
    global _last
    import torch

    torch.set_num_threads(max(1, int(count)))
    _last = ThreadBudget(torch.get_num_threads(), machine_cores(), 1, reason)
    return _last


def apply_thread_budget(log=print) -> ThreadBudget:
    """Give this process its share of the cores and say so: every process that trains calls it once."""
    global _last
    budget = thread_budget()
    set_threads(budget.threads, budget.reason)
    _last = budget
    if log is not None:
        log(budget.describe())
    return budget


def thread_note() -> str:
    """What the training log says about threads: the budget's decision, or that nobody set one."""
    import torch

    if _last is not None and _last.threads == torch.get_num_threads():
        return _last.describe()
    return f"torch threads: {torch.get_num_threads()} (set by the caller, not by the thread budget)"
