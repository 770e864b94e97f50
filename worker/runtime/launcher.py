"""Run one job on several processes: the worker starts `torchrun` as a subprocess and watches it.

    worker (execute_job) ──Popen, own session──> torchrun ──> rank 0 .. rank N-1
       │ heartbeat + cancel flag, as for any job            python -m worker.runtime.rank_entry <job> <attempt>
       └ writes <control dir>/stop when the job must stop    each runs the kind's own handler (rank_entry.py)

Why a subprocess: Celery's prefork children are daemonic and may not fork (celery #1709), and a GPU worker's
solo pool must not fork after CUDA may have started. torchrun is exec'd fresh in a session of its own
(`start_new_session`), so a signal meant for the worker (Ctrl+C in a terminal) does not reach the ranks
behind its back: the worker decides when they stop.

What the worker does while the ranks run:
  - keeps its `JobHeartbeat` (heartbeats fenced by the attempt, the cancel flag), as for an in-process job;
  - when the heartbeat says stop (cancelled, lost, the worker shutting down) writes the reason into the stop
    file; every rank's `should_stop` reads it and the training loop agrees on it across ranks (one all-reduce
    of the flag, llm/distributed.py), so all ranks checkpoint and stop on the same step;
  - when torchrun exits, records a failure if the ranks recorded no outcome: torchrun's root cause (the
    first rank that failed) becomes a readable error naming the rank, its pid and its exit (a signal by
    name), with the rank's own error when it raised one (rank_entry writes it), and the end of torchrun's
    output in the job log. The checkpoint stays: resuming the job continues from it, on any number of ranks.

Who writes: rank 0 alone writes metrics, log lines and progress to the database (its own ProgressWriter,
fenced by the attempt like the runner's) and records the outcome (succeeded with the Model row, cancelled,
requeued on a worker shutdown); the other ranks write nothing. Failures are recorded here, by the worker,
because the rank that fails first is often not rank 0 (rank 0 then only sees "connection closed by peer").

Nothing outlives the worker: torchrun gets SIGKILL when the worker's launching thread dies
(PR_SET_PDEATHSIG), each rank gets SIGKILL when torchrun dies (rank_entry sets the same on itself: torchrun
starts every rank in a session of its own, so killing torchrun's process group does not reach them), and a
rank also stops when the worker's pid is gone. On an exception in the worker itself (a cold shutdown) the
launcher terminates torchrun, which terminates its ranks.

Each rank's torch threads: WORKBENCH_JOB_PROCESSES becomes the number of job processes on this machine with
this job's ranks counted (llm/threads.py divides the cores by it). CUDA_VISIBLE_DEVICES is narrowed to the
job's devices when they are GPU indices; rank r then uses visible GPU LOCAL_RANK (llm/distributed.py).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from db.models import Job, JobStatus
from db.session import with_retries
from db.settings import Settings
from llm.threads import JOB_PROCESSES_ENV
from worker.jobs import lifecycle as jobs

logger = logging.getLogger(__name__)

CONTROL_DIR_ENV = "WORKBENCH_LAUNCH_DIR"     # where a rank finds the stop file and leaves its error
LAUNCHER_PID_ENV = "WORKBENCH_LAUNCHER_PID"  # the worker process that launched the ranks
STOP_FILE = "stop"
TORCHRUN_LOG = "torchrun.log"
POLL_S = 0.2
TERMINATE_GRACE_S = 30.0  # after SIGTERM, how long torchrun has to end its ranks before SIGKILL
LOG_TAIL_CHARS = 6000


# ----------------------------------------------------------------------------- how many processes

def job_devices(job: Job) -> list[str] | None:
    """The devices the queue gave the job (worker.jobs.devices, issue 20 item 3), or None where it gave none."""
    try:
        from worker.jobs.devices import assigned_devices
    except ImportError:  # the allocation is not there yet: the job's declared count decides
        return None
    devices = assigned_devices(job)
    return list(devices) if devices else None


def job_processes(job: Job) -> int:
    """How many ranks run the job on this machine: its assigned devices, else its `devices` param (default 1)."""
    devices = job_devices(job)
    if devices:
        return len(devices)
    return max(1, int((job.params or {}).get("devices", 1) or 1))


def launches(session: Session, job_id: int) -> bool:
    """Does the job run on several processes (torchrun) rather than in the worker's own process?"""
    job = session.get(Job, job_id)
    many = job is not None and job_processes(job) > 1
    session.commit()  # no read transaction held while the job runs
    return many


def cuda_devices(devices: list[str] | None) -> str | None:
    """CUDA_VISIBLE_DEVICES for the job's devices when they are GPUs ("0,3", or their UUIDs); None for CPU slots
    ("cpu0") or none at all."""
    if not devices:
        return None
    try:
        from worker.jobs.devices import cuda_visible_devices
    except ImportError:
        return None
    return cuda_visible_devices(devices)


# ----------------------------------------------------------------------------- the torchrun command

def torchrun_command(job_id: int, attempt: int, processes: int, *, nodes: int = 1,
                     endpoint: str = "127.0.0.1:0", run_id: str | None = None,
                     join_timeout_s: float | None = None, local_address: str | None = None) -> list[str]:
    """The `torchrun` command line that runs the job's ranks (`python -m torch.distributed.run`, which is what
    the `torchrun` script runs, with this interpreter). One machine: a c10d rendezvous on a free local port."""
    command = [sys.executable, "-m", "torch.distributed.run",
               f"--nnodes={nodes}", f"--nproc-per-node={processes}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
               f"--rdzv-id={run_id or f'job-{job_id}-attempt-{attempt}'}",
               "--max-restarts=0",  # a failed rank fails the attempt; the job resumes from its checkpoint
               "--monitor-interval=0.2"]
    if join_timeout_s is not None:
        command.append(f"--rdzv-conf=join_timeout={int(join_timeout_s)}")
    if local_address:
        command.append(f"--local-addr={local_address}")
    return command + ["-m", "worker.runtime.rank_entry", str(job_id), str(attempt)]


def rank_environment(processes: int, control_dir: Path, devices: list[str] | None) -> dict[str, str]:
    """The ranks' environment: the worker's own, their thread budget, the control directory, their GPUs."""
    env = dict(os.environ)
    declared = env.get(JOB_PROCESSES_ENV, "").strip()
    slots = int(declared) if declared.isdigit() and int(declared) > 0 else 1
    # This job's ranks are `processes` of the machine's job processes (the worker's other slots keep theirs).
    env[JOB_PROCESSES_ENV] = str(max(slots, processes))
    env[CONTROL_DIR_ENV] = str(control_dir)
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    env["PYTHONUNBUFFERED"] = "1"
    visible = cuda_devices(devices)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return env


# ----------------------------------------------------------------------------- dying with the worker

_libc = None


def _load_libc():
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `signum` to this process when the thread that started it ends (Linux only;
    elsewhere nothing, and a rank's check of the launcher's pid remains)."""
    libc = _load_libc()
    if libc is not None:
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)


def _child_setup() -> None:
    """Runs in the forked child before exec: no imports, no locks, only the call libc was loaded for."""
    if _libc is not None:
        _libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)


# ----------------------------------------------------------------------------- failures

@dataclass(frozen=True)
class RankFailure:
    rank: int
    local_rank: int
    exitcode: int
    pid: int
    host: str = ""


_FAILURE = re.compile(r"host\s*:\s*(?P<host>\S*)\s*\n\s*rank\s*:\s*(?P<rank>-?\d+)\s*\(local_rank:\s*(?P<local>\d+)\)"
                      r"\s*\n\s*exitcode\s*:\s*(?P<exit>-?\d+)\s*\(pid:\s*(?P<pid>\d+)\)")


def root_cause(output: str) -> RankFailure | None:
    """The first failure torchrun observed (its 'Root Cause' block), or None when its output has none."""
    _, found, after = output.rpartition("Root Cause")
    match = _FAILURE.search(after) if found else None
    if match is None:
        return None
    return RankFailure(int(match["rank"]), int(match["local"]), int(match["exit"]), int(match["pid"]), match["host"])


def _signal_name(exitcode: int) -> str:
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def rank_error_path(control_dir: Path, rank: int) -> Path:
    return control_dir / f"rank-{rank}-error.json"


def failure_message(returncode: int, output: str, control_dir: Path, world_size: int) -> str:
    """One sentence for the Jobs tab: which rank failed first, how, and its own error when it raised one."""
    cause = root_cause(output)
    if cause is None:
        return (f"torchrun exited with code {returncode} before any rank reported a failure "
                f"(see the job log for its output)")
    who = f"rank {cause.rank} of {world_size} (pid {cause.pid}" + (f" on {cause.host})" if cause.host else ")")
    if cause.exitcode < 0:
        return f"{who} was killed by {_signal_name(cause.exitcode)}; the checkpoint is kept, resume to continue"
    try:
        error = json.loads(rank_error_path(control_dir, cause.rank).read_text())["error"]
    except (OSError, ValueError, KeyError):
        error = None
    if error:
        return f"{who} failed: {error}"
    return f"{who} exited with code {cause.exitcode}; the checkpoint is kept, resume to continue"


# ----------------------------------------------------------------------------- running the ranks

def run_job_ranks(session: Session, job_id: int, attempt: int, settings: Settings, heartbeat) -> JobStatus | None:
    """Run attempt `attempt` of the job on its ranks under torchrun and return the status recorded (None when
    the job is no longer this attempt's). `heartbeat` is the runner's running JobHeartbeat."""
    from worker.jobs.throughput import DEVICE_USE

    job = session.get(Job, job_id)
    processes, devices = job_processes(job), job_devices(job)
    session.commit()
    control_dir = Path(tempfile.mkdtemp(prefix=f"workbench-job-{job_id}-attempt-{attempt}-"))
    try:
        command = torchrun_command(job_id, attempt, processes)
        env = rank_environment(processes, control_dir, devices)
        jobs.add_log(session, job_id, f"launching {processes} processes with torchrun (data parallel"
                                      + (f" on devices {', '.join(devices)})" if devices else ")"))
        session.commit()
        with DEVICE_USE.job():  # this worker's throughput probe waits while the ranks use the device
            returncode, output = supervise(command, env, control_dir, heartbeat)
        return _settle(session, job_id, attempt, returncode, output, control_dir, processes)
    except Exception as error:  # torchrun could not start, the database went away: the attempt fails
        from worker.runtime.runner import _record_failure

        session.rollback()
        return _record_failure(session, job_id, attempt, error)
    except BaseException:  # the worker itself is going down: the ranks were ended, the job goes back
        from worker.runtime.runner import _requeue

        session.rollback()
        _requeue(session, job_id, attempt, "the worker stopped; the job was requeued")
        raise
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)


def supervise(command: list[str], env: dict[str, str], control_dir: Path, heartbeat) -> tuple[int, str]:
    """Start torchrun, pass a stop on to the ranks, wait for it; (its exit code, its output)."""
    log_path = control_dir / TORCHRUN_LOG
    _load_libc()  # here, in the worker: the forked child must only call it
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_child_setup)
    logger.info("torchrun (pid %s): %s", process.pid, " ".join(command))
    stop_written = False
    try:
        while process.poll() is None:
            if not stop_written and heartbeat.should_stop():
                write_stop(control_dir, heartbeat.stop_reason or "cancelled")
                stop_written = True
            time.sleep(POLL_S)
    except BaseException:
        # The worker itself is going down (cold shutdown, SystemExit): the ranks go with it, now.
        terminate(process)
        raise
    finally:
        terminate(process)  # nothing of the group is left, whatever happened
    return process.returncode, log_path.read_text(errors="replace")


def write_stop(control_dir: Path, reason: str) -> None:
    """Tell every rank to checkpoint and stop; `reason` (cancelled, lost, shutdown) says how rank 0 records it."""
    temporary = control_dir / (STOP_FILE + ".tmp")
    temporary.write_text(reason)
    temporary.replace(control_dir / STOP_FILE)


def terminate(process: subprocess.Popen) -> None:
    """End torchrun (which ends its ranks: SIGTERM, then SIGKILL after its own grace period), then its group."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=TERMINATE_GRACE_S + 5)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:
        os.killpg(process.pid, signal.SIGKILL)  # anything torchrun left in its group
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.wait(timeout=10)


def _settle(session: Session, job_id: int, attempt: int, returncode: int, output: str, control_dir: Path,
            world_size: int) -> JobStatus | None:
    """After torchrun: the outcome rank 0 recorded, or a failure recorded here when none was."""
    session.rollback()
    job = session.get(Job, job_id, populate_existing=True)
    ours = job is not None and job.attempts == attempt
    if ours and job.status != JobStatus.running:
        status = job.status
        session.commit()
        return status  # rank 0 recorded it
    session.commit()
    if not ours:
        return None
    if returncode == 0:
        message = "the ranks finished without recording an outcome (see the job log for torchrun's output)"
    else:
        message = failure_message(returncode, output, control_dir, world_size)
    tail = output[-LOG_TAIL_CHARS:]
    logger.warning("job %s failed on its ranks: %s", job_id, message)
    recorded = with_retries(lambda: jobs.finish_job(
        session, job_id, attempt, JobStatus.failed, error=message,
        log_line=f"failed: {message}\n--- the end of torchrun's output ---\n{tail}"), session)
    return JobStatus.failed if recorded else None
