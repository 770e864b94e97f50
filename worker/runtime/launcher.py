"""Run one job on several processes (or machines): the worker starts `torchrun` as a subprocess and watches it.

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
job's GPU slots (worker.jobs.devices); rank r then uses visible GPU LOCAL_RANK (llm/distributed.py,
rank_entry.rank_settings).

Several machines (`nodes` > 1): this worker is node 0 (`run_job_ranks`) or joined as a follower
(`follow_waiting_job`, called first by the runner for every message); the rendezvous, its timeout and what a
node lost means are rendezvous.py's docstring. `NodeWatch` beats this node's row while its torchrun runs.
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
from worker.jobs import devices as device_slots
from worker.jobs import lifecycle as jobs
from worker.runtime import rendezvous
from worker.runtime.outcomes import record_failure, requeue

logger = logging.getLogger(__name__)

CONTROL_DIR_ENV = "WORKBENCH_LAUNCH_DIR"     # where a rank finds the stop file and leaves its error
LAUNCHER_PID_ENV = "WORKBENCH_LAUNCHER_PID"  # the worker process that launched the ranks
STOP_FILE = "stop"
STARTED_FILE = "started"  # written by a node's first rank: torchrun started the ranks, the rendezvous is over
FINISHED_FILE = "finished-{local_rank}"  # written by each rank that returned (rank 0: after recording the outcome)
TORCHRUN_LOG = "torchrun.log"
POLL_S = 0.2
TERMINATE_GRACE_S = 30.0  # after SIGTERM, how long torchrun has to end its ranks before SIGKILL
# After this node's ranks all finished, how long torchrun may wait at its exit barrier for the other nodes' torchrun
# (its own limit is 300 s, not settable from the command line): a node whose launch was ended early would
# otherwise keep this worker, and its devices, for five minutes after the job ended.
EXIT_BARRIER_GRACE_S = 10.0
LOG_TAIL_CHARS = 6000
# What a rank's error says when it is only the consequence of a peer that went away (gloo, NCCL, the c10d store).
PEER_LOST_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL", "DistNetworkError",
                   "DistStoreError", "timed out", "Timed out")


# ----------------------------------------------------------------------------- how many processes

def job_devices(job: Job) -> list[str]:
    """The device slots the queue gave the job (worker.jobs.devices; its `devices` count of the worker's first
    slots for a row that recorded none)."""
    return device_slots.assigned_devices(job)


def job_processes(job: Job) -> int:
    """How many ranks run the job on this machine: its device slots (its `devices`, default 1)."""
    return max(1, len(job_devices(job)))


def launches(session: Session, job_id: int) -> bool:
    """Does the job run on several processes or machines (torchrun) rather than in the worker's own process?"""
    job = session.get(Job, job_id)
    many = job is not None and (job_processes(job) > 1 or rendezvous.job_nodes(job) > 1)
    session.commit()  # no read transaction held while the job runs
    return many


def cuda_devices(devices: list[str] | None) -> str | None:
    """CUDA_VISIBLE_DEVICES for the job's devices when they are GPUs ("0,3", or their UUIDs); None for CPU slots
    ("cpu0") or none at all."""
    return device_slots.cuda_visible_devices(devices) if devices else None


# ----------------------------------------------------------------------------- the torchrun command

def torchrun_command(job_id: int, attempt: int, processes: int, *, nodes: int = 1,
                     endpoint: str = "127.0.0.1:0", join_timeout_s: float | None = None,
                     is_host: bool | None = None, local_address: str | None = None) -> list[str]:
    """The `torchrun` command line that runs the job's ranks (`python -m torch.distributed.run`, which is what
    the `torchrun` script runs, with this interpreter). One machine: a c10d rendezvous on a free local port;
    several: the endpoint node 0 published, hosted by node 0's agent (`is_host`; rendezvous.py)."""
    command = [sys.executable, "-m", "torch.distributed.run",
               f"--nnodes={nodes}", f"--nproc-per-node={processes}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
               f"--rdzv-id=job-{job_id}-attempt-{attempt}",  # the same on every node of the attempt
               "--max-restarts=0",  # a failed rank fails the attempt; the job resumes from its checkpoint
               "--monitor-interval=0.2"]
    conf = ([f"join_timeout={max(1, int(join_timeout_s))}"] if join_timeout_s is not None else []) + (
        [f"is_host={int(is_host)}"] if is_host is not None else [])
    if conf:
        command.append("--rdzv-conf=" + ",".join(conf))
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
    if devices:  # inside the ranks the job's slots are all there is: slot i is cuda:i (rank_entry.rank_settings)
        env[device_slots.DEVICES_ENV] = device_slots.format_slots(devices)
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


def rank_finished_path(control_dir: Path, local_rank: int) -> Path:
    return control_dir / FINISHED_FILE.format(local_rank=local_rank)


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
    the job is no longer this attempt's). `heartbeat` is the runner's running JobHeartbeat. A job on several
    nodes: this worker is node 0, which publishes the rendezvous and calls the others (rendezvous.py)."""
    from worker.jobs.throughput import DEVICE_USE

    job = session.get(Job, job_id)
    processes, devices, nodes = job_processes(job), job_devices(job), rendezvous.job_nodes(job)
    worker_host = job.worker_host or ""
    session.commit()
    control_dir = Path(tempfile.mkdtemp(prefix=f"workbench-job-{job_id}-attempt-{attempt}-"))
    try:
        env = rank_environment(processes, control_dir, devices)
        on_devices = f" on devices {', '.join(devices)}" if devices else ""
        watch = None
        if nodes == 1:
            command = torchrun_command(job_id, attempt, processes)
            jobs.add_log(session, job_id, f"launching {processes} processes with torchrun (data parallel{on_devices})")
        else:
            place = rendezvous.publish(session, job_id, attempt, worker_host)
            timeout = rendezvous.rendezvous_timeout_s()
            command = torchrun_command(job_id, attempt, processes, nodes=nodes, endpoint=place.endpoint,
                                       join_timeout_s=timeout, is_host=True, local_address=rendezvous.node_address())
            jobs.add_log(session, job_id, f"node 0 of {nodes}: {processes} processes here{on_devices}; waiting up to "
                                          f"{timeout:g} s for {nodes - 1} more worker{'s' if nodes > 2 else ''} with "
                                          f"{processes} free device{'s' if processes > 1 else ''} each to join the "
                                          f"rendezvous at {place.endpoint}")
            watch = NodeWatch(session, place, settings, control_dir)
        session.commit()
        for _ in range(nodes - 1):
            jobs.enqueue(job_id)  # one message per other node: the workers that take them join (rendezvous.py)
        with DEVICE_USE.job():  # this worker's throughput probe waits while the ranks use the device
            returncode, output, aborted = supervise(command, env, control_dir, processes, heartbeat, watch)
        if aborted is not None:  # a node left during the rendezvous: nothing ran, the job goes back to the queue
            requeued = requeue(session, job_id, attempt, f"{aborted}; nothing ran yet, so the job was requeued")
            return JobStatus.queued if requeued else None
        return _settle(session, job_id, attempt, returncode, output, control_dir, processes * nodes, watch)
    except Exception as error:  # torchrun could not start, the database went away: the attempt fails
        session.rollback()
        return record_failure(session, job_id, attempt, error)
    except BaseException:  # the worker itself is going down: the ranks were ended, the job goes back
        session.rollback()
        requeue(session, job_id, attempt, "the worker stopped; the job was requeued")
        raise
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)


def follow_waiting_job(worker_host: str, message_job_id: int | None, settings,
                       slots: list[str] | None = None) -> int | None:
    """If the message's job is a multi-node job waiting for workers, join it and run this node's ranks until they
    end; returns the job's id, or None when the message is for something else (the caller claims as usual).
    `slots`: this worker's device slots; it joins only with the job's `devices` of them free."""
    from db.session import SessionLocal

    if message_job_id is None:
        return None
    session = SessionLocal(settings.database_url)
    try:
        place = take_place(session, message_job_id, worker_host, slots)
        if place is False:
            # This worker is already one of the job's nodes, or has too few free slots now: hand the message on, a
            # moment later, to another worker (torchrun's join timeout bounds how long this goes on).
            time.sleep(rendezvous.BUSY_RESEND_S)
            jobs.enqueue(message_job_id)
            return message_job_id
        if place is None:
            return None
        jobs.add_log(session, place.job_id, f"node {place.node_rank} of {place.nodes} joined: {worker_host}")
        session.commit()
        run_follower_ranks(session, place, settings)
        return place.job_id
    finally:
        session.close()


def take_place(session: Session, job_id: int, worker_host: str, slots: list[str] | None):
    """rendezvous.join with this worker's free slots, picked and recorded on its JobNode row under the worker's slot
    lock (worker.jobs.devices.slot_lock, as a claim picks them), so another process of the same worker never claims
    a job onto the slots this follower's ranks take (held_slots counts the row until it is left)."""
    if not slots:
        return rendezvous.join(session, job_id, worker_host)
    with device_slots.slot_lock(device_slots.node_of(worker_host)):
        return rendezvous.join(session, job_id, worker_host, free_slots=free_slots_here(session, worker_host, slots))


def free_slots_here(session: Session, worker_host: str, slots: list[str] | None) -> list[str] | None:
    """The slots of this worker that no running job holds (worker.jobs.devices); None when it declared none."""
    if not slots:
        return None
    held = jobs.held_slots(session, device_slots.node_of(worker_host))
    session.commit()
    return device_slots.free_slots(slots, (assigned for _, assigned in held))


def run_follower_ranks(session: Session, place, settings: Settings) -> int:
    """Run this worker's ranks of a multi-node job it joined (follow_waiting_job) on the slots its place took
    (`place.devices`); they write nothing and this worker records nothing on the job but a log line when its
    torchrun failed. Returns torchrun's exit code."""
    job = session.get(Job, place.job_id)
    processes = job_processes(job)
    session.commit()
    devices = list(place.devices[:processes]) if place.devices and len(place.devices) >= processes else None
    control_dir = Path(tempfile.mkdtemp(prefix=f"workbench-job-{place.job_id}-attempt-{place.attempt}-"))
    try:
        command = torchrun_command(place.job_id, place.attempt, processes, nodes=place.nodes, endpoint=place.endpoint,
                                   join_timeout_s=rendezvous.rendezvous_timeout_s(), is_host=False,
                                   local_address=rendezvous.node_address())
        env = rank_environment(processes, control_dir, devices)
        returncode, output, aborted = supervise(command, env, control_dir, processes, None,
                                                NodeWatch(session, place, settings, control_dir))
        rendezvous.leave(session, place)
        if returncode != 0 and aborted is None:
            cause = root_cause(output)
            what = (f"rank {cause.rank} (pid {cause.pid}) exited with "
                    + (_signal_name(cause.exitcode) if cause.exitcode < 0 else f"code {cause.exitcode}")
                    if cause else f"torchrun exited with code {returncode}")
            jobs.add_log(session, place.job_id, f"node {place.node_rank} of {place.nodes}: {what}")
            session.commit()
        return returncode
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)


class NodeWatch:
    """Called by `supervise` every poll on a multi-node job: beats this node's row; on node 0, ends the launch
    when a follower stops beating before the ranks started (the job is then requeued); on a follower, ends it
    when the job is no longer in the attempt it joined (node 0 died and the reaper took the job back), or when
    the job ended and this node's ranks are still running a while later (_follower_verdict)."""

    def __init__(self, session: Session, place, settings: Settings, control_dir: Path):
        self.session, self.place, self.control_dir = session, place, control_dir
        self.interval_s = settings.heartbeat_seconds
        self.stale_s = settings.stale_after_seconds
        self._next = 0.0
        self._finished_at: float | None = None

    def started(self) -> bool:
        return (self.control_dir / STARTED_FILE).exists()

    def __call__(self) -> str | None:
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.interval_s
        try:
            rendezvous.beat(self.session, self.place)
            if self.place.node_rank > 0:
                return self._follower_verdict(now)
            if self.started():
                return None
            silent = rendezvous.silent_nodes(rendezvous.members(self.session, self.place.job_id, self.place.attempt),
                                             self.stale_s)
        except Exception as error:  # a database hiccup: the next beat tries again
            self.session.rollback()
            logger.warning("job %s: node %s could not beat: %s", self.place.job_id, self.place.node_rank, error)
            return None
        if silent:
            row = silent[0]
            return f"node {row.node_rank} ({row.worker_host}) stopped during the rendezvous"
        return None

    def _follower_verdict(self, now: float) -> str | None:
        """A follower's launch ends when node 0 was lost (the attempt is gone), or when the job ended in this
        attempt but the ranks here are still running `stale_s` later (node 0's ranks are gone: nothing will end a
        collective they wait in). A job that just ended leaves them be: they are ending on their own, and their
        torchrun must reach the exit barrier node 0's torchrun waits at."""
        state = rendezvous.attempt_state(self.session, self.place)
        if state == "gone":
            return "the job is no longer in the attempt this node joined"
        if state == "running":
            self._finished_at = None
            return None
        self._finished_at = self._finished_at or now
        return "the job ended but this node's ranks did not" if now - self._finished_at > self.stale_s else None

    def lost_nodes(self, wait_s: float) -> list:
        """Followers that stopped beating (or whose torchrun exited), waiting up to `wait_s` for one to show."""
        deadline = time.monotonic() + wait_s
        while True:
            rows = rendezvous.members(self.session, self.place.job_id, self.place.attempt)
            silent = rendezvous.silent_nodes(rows, self.stale_s)
            if silent or time.monotonic() >= deadline:
                return silent
            time.sleep(POLL_S)


def supervise(command: list[str], env: dict[str, str], control_dir: Path, local_ranks: int, heartbeat=None,
              on_tick=None) -> tuple[int, str, str | None]:
    """Start torchrun, pass a stop on to the ranks, wait for it: (its exit code, its output, why it was ended
    early: what `on_tick` returned, None when it ran its course). `heartbeat`: the job's (None: no stop here).
    A torchrun whose `local_ranks` ranks all finished but which still waits at its exit barrier after
    EXIT_BARRIER_GRACE_S is ended, and counts as having exited 0: the ranks' work is done."""
    log_path = control_dir / TORCHRUN_LOG
    _load_libc()  # here, in the worker: the forked child must only call it
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_child_setup)
    logger.info("torchrun (pid %s): %s", process.pid, " ".join(command))
    stop_written, aborted, finished_at, lingered = False, None, None, False
    try:
        while process.poll() is None:
            if not stop_written and heartbeat is not None and heartbeat.should_stop():
                write_stop(control_dir, heartbeat.stop_reason or "cancelled")
                stop_written = True
            aborted = on_tick() if on_tick is not None else None
            if aborted is not None:
                logger.warning("ending torchrun (pid %s): %s", process.pid, aborted)
                break
            if finished_at is None:
                if all(rank_finished_path(control_dir, rank).exists() for rank in range(local_ranks)):
                    finished_at = time.monotonic()
            elif time.monotonic() - finished_at > EXIT_BARRIER_GRACE_S:
                logger.warning("ending torchrun (pid %s): its ranks finished %g s ago and it still waits for another "
                               "node at its exit barrier", process.pid, EXIT_BARRIER_GRACE_S)
                lingered = True
                break
            time.sleep(POLL_S)
    except BaseException:
        # The worker itself is going down (cold shutdown, SystemExit): the ranks go with it, now.
        terminate(process)
        raise
    finally:
        terminate(process)  # nothing of the group is left, whatever happened
    returncode = 0 if lingered else process.returncode
    return returncode, log_path.read_text(errors="replace"), aborted


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
            world_size: int, watch: NodeWatch | None = None) -> JobStatus | None:
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
    elif watch is not None:
        message = node_failure_message(returncode, output, control_dir, world_size, watch)
    else:
        message = failure_message(returncode, output, control_dir, world_size)
    tail = output[-LOG_TAIL_CHARS:]
    logger.warning("job %s failed on its ranks: %s", job_id, message)
    recorded = with_retries(lambda: jobs.finish_job(
        session, job_id, attempt, JobStatus.failed, error=message,
        log_line=f"failed: {message}\n--- the end of torchrun's output ---\n{tail}"), session)
    return JobStatus.failed if recorded else None


def node_failure_message(returncode: int, output: str, control_dir: Path, world_size: int, watch: NodeWatch) -> str:
    """Why a multi-node launch failed, seen from node 0: too few workers came, or a node stopped, or a rank."""
    place = watch.place
    if not watch.started():
        joined = rendezvous.count_joined(watch.session, place.job_id, place.attempt)
        if "RendezvousTimeoutError" in output or joined < place.nodes:
            return (f"not enough workers came: {joined} of the {place.nodes} nodes this job needs joined the "
                    f"rendezvous within {rendezvous.rendezvous_timeout_s():g} s (each node is a worker with "
                    f"{world_size // place.nodes} free device{'s' if world_size // place.nodes > 1 else ''}, on "
                    f"this database and broker); resume it when they are running")
        return f"torchrun failed before the ranks started (exit code {returncode}; see the job log)"
    own = failure_message(returncode, output, control_dir, world_size)
    cause = root_cause(output)
    if cause is not None and cause.exitcode > 0 and not any(sign in own for sign in PEER_LOST_SIGNS):
        return own  # a rank here failed of its own accord (bad data, out of memory): not another node's doing
    lost = watch.lost_nodes(wait_s=watch.stale_s + watch.interval_s)
    if lost:
        row = lost[0]
        return (f"node {row.node_rank} of {place.nodes} ({row.worker_host}) stopped during training; "
                f"the checkpoint is kept, resume to continue")
    return own
