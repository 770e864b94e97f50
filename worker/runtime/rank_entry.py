"""What each torchrun rank of a multi-process job runs: the kind's own handler, unchanged.

    python -m worker.runtime.rank_entry <job id> <attempt>     (started by worker.runtime.launcher)

Every rank builds the job's context as the runner does and calls the handler its kind declares; the training
loop inside joins the other ranks (llm/distributed.py reads torchrun's environment), so a handler needs no
change to run on several processes. The ranks differ only in what they may write:

  rank 0     its context writes metrics, log lines and progress to the database through a ProgressWriter
             fenced by the attempt, exactly as the runner's; when the handler returns, rank 0 records the
             outcome as the runner does (succeeded + the Model row, cancelled, requeued on a worker shutdown;
             nothing when the attempt was lost);
  the others a silent context: their records go nowhere (llm/train.py also keeps them from writing files).

Stopping: `should_stop` is true once the launching worker has written the stop file (its heartbeat saw a
cancel, a lost attempt or its own shutdown) or the worker's process is gone. The loop all-reduces the flag,
so every rank stops on the same step and rank 0 saves the checkpoint.

Failing: a rank that raises writes its readable error to the control directory (the launcher names it in the
job's error) and exits non-zero; torchrun then ends the other ranks and the worker records the failure. Rank 0
never records a failure itself: when another rank died first, rank 0's own error is only a consequence.

A rank dies with torchrun (PR_SET_PDEATHSIG): torchrun starts each rank in a session of its own, so nothing
else would end a rank whose torchrun was killed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from db.models import JobStatus
from db.settings import get_settings
from llm.distributed import leave, ranks_from_environment
from llm.threads import apply_thread_budget
from worker.jobs.progress_writer import ProgressWriter
from worker.runtime.launcher import (CONTROL_DIR_ENV, LAUNCHER_PID_ENV, STARTED_FILE, STOP_FILE, die_with_parent,
                                     rank_error_path, rank_finished_path)

logger = logging.getLogger(__name__)

LAUNCHER_CHECK_S = 2.0  # how often a rank looks whether the launching worker still lives


class SilentWriter(ProgressWriter):
    """The writer of ranks other than 0: every record goes nowhere."""

    def __init__(self) -> None:
        super().__init__(job_id=0, attempt=0)

    def start(self) -> "SilentWriter":
        return self

    def put(self, record) -> None:
        pass

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> bool:
        return True


class RankStop:
    """A rank's stop signal: the launcher's stop file (its content is the reason), or the launcher gone."""

    def __init__(self, control_dir: Path, launcher_pid: int | None):
        self.path = control_dir / STOP_FILE
        self.launcher_pid = launcher_pid
        self._reason: str | None = None
        self._checked_launcher = 0.0

    def should_stop(self) -> bool:
        if self._reason is not None:
            return True
        if self.path.exists():
            self._reason = self.path.read_text().strip() or "cancelled"
            return True
        now = time.monotonic()
        if self.launcher_pid and now - self._checked_launcher >= LAUNCHER_CHECK_S:
            self._checked_launcher = now
            if not _alive(self.launcher_pid):
                self._reason = "lost"  # the worker is gone: its job is the reaper's now; write nothing
                return True
        return False

    @property
    def stop_reason(self) -> str | None:
        return self._reason

    def agreed_elsewhere(self, session, job_id: int) -> None:
        """The ranks stopped because a rank on another machine was told to (only its worker knows why): a cancel
        when the job's cancel was requested, else that worker is going away, so the job goes back to the queue."""
        from db.models import Job

        cancel_requested = session.get(Job, job_id, populate_existing=True).cancel_requested
        session.commit()
        self._reason = "cancelled" if cancel_requested else "shutdown"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_error(control_dir: Path, rank: int, error: BaseException) -> None:
    from worker.runtime.outcomes import readable_error

    path = rank_error_path(control_dir, rank)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"rank": rank, "time": time.time(), "error": readable_error(error),
                                     "traceback": "".join(traceback.format_exception(error))}))
    temporary.replace(path)


def rank_settings(settings, local_rank: int):
    """The worker's settings as this rank uses them: on GPU slots, unless the worker pins a device, this rank's own
    GPU (the launcher narrowed CUDA_VISIBLE_DEVICES to the job's slots, so local rank r is cuda:r), so that no rank
    opens a context on another rank's GPU; on CPU slots, the settings as they are."""
    from dataclasses import replace

    from worker.jobs import devices

    slots = devices.declared_slots()  # the job's slots (launcher.rank_environment)
    if slots and devices.is_gpu(slots[0]) and str(settings.device or "auto").lower() in ("auto", "cuda"):
        return replace(settings, device=f"cuda:{local_rank}")
    return settings


def run_rank(job_id: int, attempt: int) -> JobStatus | None:
    """Run this rank's share of attempt `attempt` of job `job_id`; rank 0 returns the status it recorded."""
    from db.session import SessionLocal
    from worker.kinds import get_spec
    from worker.runtime.outcomes import record_outcome
    from worker.runtime.runner import _make_context

    control_dir = Path(os.environ[CONTROL_DIR_ENV])
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    ranks = ranks_from_environment()
    if ranks.local_rank == 0:  # torchrun starts ranks once the rendezvous is complete: tell this node's worker
        (control_dir / STARTED_FILE).touch()
    settings = rank_settings(get_settings(), ranks.local_rank)
    stop = RankStop(control_dir, int(launcher) if launcher else None)
    session = SessionLocal(settings.database_url)
    writer = ProgressWriter(job_id, attempt, settings.database_url).start() if ranks.is_main else SilentWriter()
    try:
        try:
            ctx = _make_context(session, job_id, attempt, settings, stop, writer)
            spec = get_spec(ctx.kind)
            if spec is None:
                raise ValueError(f"{ctx.kind} jobs are not available on this worker")
            if ranks.is_main:
                ctx.log(f"rank 0 of {ranks.world_size} (pid {os.getpid()}) writes this job's records")
            apply_thread_budget(log=ctx.log)  # each rank's share of the cores, said once (rank 0's log)
            outcome = spec.handler(ctx)
        finally:
            writer.close()  # rank 0's records go in before anything else is recorded
        if not ranks.is_main:
            return None
        if outcome.stopped and stop.stop_reason is None:
            stop.agreed_elsewhere(session, job_id)
        return record_outcome(session, job_id, attempt, stop, outcome)
    except BaseException as error:
        session.rollback()
        _write_error(control_dir, ranks.rank, error)
        raise
    finally:
        session.close()


@record  # torchrun's own error file too: its root cause then holds this rank's traceback
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m worker.runtime.rank_entry <job id> <attempt>  (started by the worker)")
    die_with_parent()  # torchrun killed → this rank too
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    logging.basicConfig(level=logging.WARNING, format=f"[rank {os.environ.get('RANK', '?')}] %(levelname)s %(message)s")
    if launcher and os.getppid() == 1:  # torchrun died before the line above: do not start at all
        raise SystemExit("torchrun is gone")
    run_rank(int(argv[0]), int(argv[1]))
    # Done and recorded (rank 0's writer closed, its session too): leave the process group together and exit now,
    # without the interpreter's slow teardown of torch's threads; torchrun then sees every rank finished at once.
    leave()
    if os.environ.get(CONTROL_DIR_ENV):  # this node's worker ends a torchrun left waiting on another node's
        rank_finished_path(Path(os.environ[CONTROL_DIR_ENV]), int(os.environ.get("LOCAL_RANK", "0"))).touch()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
