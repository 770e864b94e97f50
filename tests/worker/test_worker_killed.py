"""A job whose pool process is killed by the kernel (SIGKILL, what the OOM killer sends) fails at once
with that reason, is not resumable, and the worker goes on with the next queued job.

A real `python -m worker.runtime.main --pool prefork --concurrency 1` over the Redis on 127.0.0.1:6379 (a
queue of the test's own) and SQLite: a pretrain job runs in the pool child, the child gets SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import JobEvent, JobStatus
from tests.support.processes import descendants
from tests.support.worker_processes import (REPO_ROOT, TINY_RUN, WorkerProcess, job_log, job_snapshot, loss_steps,
                                            wait_for, wait_for_status)
from worker.jobs import lifecycle as jobs

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


@pytest.fixture
def prefork_worker(job_queue, tmp_path: Path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "worker.runtime.main", "--pool", "prefork", "--concurrency", "1"],
                                   cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    worker = WorkerProcess(process, log_path)
    yield worker
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_pool_child_killed_by_the_kernel_fails_its_job_and_the_queue_goes_on(
        workbench_env, session, dataset, small_tokenizer, prefork_worker):
    big = jobs.submit_job(session, "pretrain", {"dataset_id": dataset.id, "max_steps": 5000, "log_every": 1,
                                                "checkpoint_every": 0, "eval_every": 0,
                                                **TINY_RUN, "tokenizer": small_tokenizer}, priority=5)
    after = jobs.submit_job(session, "prepare", {"dataset_id": dataset.id, "tokenizer": small_tokenizer})
    wait_for(lambda: bool(loss_steps(session, big.id)), 180, "the first training step", session, big.id,
             [prefork_worker])
    children = descendants(prefork_worker.pid)
    assert len(children) == 1, children  # concurrency 1: one pool process, running the job
    (child,) = children
    os.kill(child, signal.SIGKILL)  # what the OOM killer does

    failed = wait_for_status(session, big.id, {JobStatus.failed, JobStatus.succeeded, JobStatus.queued}, 60,
                             [prefork_worker])
    assert failed.status == JobStatus.failed, job_log(session, big.id)
    assert failed.error.startswith("killed by the operating system (SIGKILL), most likely out of memory: "), failed.error
    assert "signal 9" in failed.error
    assert failed.resumable is False and failed.finished_at is not None and failed.attempts == 1
    session.rollback()
    events = session.execute(select(JobEvent.action, JobEvent.user_id).where(JobEvent.job_id == big.id)
                             .order_by(JobEvent.id)).all()
    assert events[-1] == ("failed", None)  # the system did it

    done = wait_for_status(session, after.id, {JobStatus.succeeded, JobStatus.failed}, 180, [prefork_worker])
    assert done.status == JobStatus.succeeded, done.error
    assert prefork_worker.process.poll() is None  # the worker itself lives on
    time.sleep(1)
    assert job_snapshot(session, big.id).status == JobStatus.failed  # the redelivered message ran nothing twice
