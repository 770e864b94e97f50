"""Real worker processes for the worker tests (`python -m worker.runtime.main`), the tiny run they train, and
waiting on what the database shows of a job (status, log, checkpoints, metrics)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Job, JobLog, Metric


REPO_ROOT = Path(__file__).resolve().parents[2]


TINY_RUN = {"preset": "tiny", "tokenizer": "gpt2", "block_size": 32, "batch_size": 4, "lr": 3e-3,
            "warmup": 2, "eval_batches": 2, "device": "cpu"}


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def kill_hard(self) -> None:
        """kill -9 the worker (and anything it started): no clean-up code runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def write_corpus(path: Path, documents: int = 160, seed: int = 0) -> None:
    """A small English-like corpus of distinct documents separated by blank lines."""
    words = ("the model reads tokens and predicts the next one while data flows through "
             "layers of attention with a small learning rate on a quiet afternoon in spring "
             "because people write many different sentences about cats dogs rivers and code").split()
    rng = random.Random(seed)
    docs = [f"Document {n}. " + " ".join(rng.choice(words) for _ in range(rng.randint(40, 80))) + "."
            for n in range(documents)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(docs) + "\n")


def job_snapshot(session: Session, job_id: int) -> Job:
    session.rollback()  # end any read transaction so we see the worker's commits
    return session.get(Job, job_id, populate_existing=True)


def job_log(session: Session, job_id: int) -> list[str]:
    session.rollback()
    return list(session.scalars(select(JobLog.line).where(JobLog.job_id == job_id).order_by(JobLog.id)))


def wait_for(condition: Callable[[], bool], timeout: float, what: str, session: Session, job_id: int,
             workers: list[WorkerProcess]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        dead = [w for w in workers if w.process.poll() is not None]
        if dead or time.monotonic() > deadline:
            reason = f"worker exited with {dead[0].process.returncode}" if dead else f"timed out after {timeout}s"
            logs = "\n".join(f"--- worker {w.pid} log tail ---\n{w.log_tail()}" for w in workers)
            pytest.fail(f"waiting for {what}: {reason}\n--- job log ---\n" + "\n".join(job_log(session, job_id))
                        + "\n" + logs)
        time.sleep(0.2)


def wait_for_status(session, job_id, statuses, timeout, workers) -> Job:
    wait_for(lambda: job_snapshot(session, job_id).status in statuses, timeout,
             f"job {job_id} to be {'/'.join(s.value for s in statuses)}", session, job_id, workers)
    return job_snapshot(session, job_id)


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the run's latest complete checkpoint (as llm.train finds it), or None."""
    from llm.train import checkpoint_dir

    try:
        found = checkpoint_dir(run_dir)
        return json.loads((found / "checkpoint.json").read_text())["step"] if found else None
    except (FileNotFoundError, json.JSONDecodeError, KeyError):  # renamed while we looked
        return None


def loss_steps(session: Session, job_id: int) -> list[int]:
    session.rollback()
    return sorted(session.scalars(select(Metric.step).where(Metric.job_id == job_id, Metric.name == "loss")))
