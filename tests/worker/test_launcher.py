"""A job on several processes, run by a real worker: `python -m worker.runtime.main` launches it as `torchrun`
ranks (worker/runtime/launcher.py, rank_entry.py) over the Redis on 127.0.0.1:6379 (a queue of the test's own)
and SQLite, CPU gloo, the tiny preset with a 320-token tokenizer.

  - a cancel stops every rank (their pids are gone, none is orphaned); the job, resumed on 1 process, continues
    from the 2-rank checkpoint to one model with each metric once;
  - a rank killed with SIGKILL fails the attempt with an error naming the rank and the signal, and nothing of the
    launch is left running.
A job that succeeds on 2 ranks, and one resumed after losing a rank, are tests/worker/test_multi_node.py's.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
from sqlalchemy import select

from db.models import Job, JobStatus, Metric, Model
from tests.support.job_ranks import rank_pids, torchrun_pids, wait_gone
from tests.support.worker_processes import (TINY_RUN, checkpoint_step, job_log, job_snapshot,
                                            loss_steps, wait_for, wait_for_status)
from worker.jobs import lifecycle as jobs

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

# Two CPU slots, one job at a time (the solo pool): a 2-device job fits the worker (worker.jobs.devices).
TWO_SLOTS = ("--processes", "2", "--concurrency", "1")
FAST_BEATS = {"WORKBENCH_HEARTBEAT_SECONDS": "0.5", "WORKBENCH_STALE_AFTER_SECONDS": "30"}


def submit_on_devices(session, params: dict, devices: int) -> Job:
    return jobs.submit_job(session, "pretrain", {**params, "devices": devices})


def run_params(small_tokenizer: str, dataset, **overrides) -> dict:
    return {"dataset_id": dataset.id, **TINY_RUN, "tokenizer": small_tokenizer, "log_every": 1, "eval_every": 0,
            **overrides}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broker", ["redis6379"], indirect=True)
def test_a_cancel_stops_every_rank_and_the_job_resumes_on_one_process_to_one_model(
        broker, workbench_env, session, dataset, small_tokenizer, start_worker):
    worker = start_worker(*TWO_SLOTS, **FAST_BEATS)
    max_steps = 400
    job = submit_on_devices(session, run_params(small_tokenizer, dataset, max_steps=max_steps, checkpoint_every=0),
                            devices=2)
    wait_for(lambda: bool(loss_steps(session, job.id)) or job_snapshot(session, job.id).status.finished, 180,
             "the first training step", session, job.id, [worker])
    assert job_snapshot(session, job.id).status == JobStatus.running, job_snapshot(session, job.id).error
    ranks = rank_pids(worker)
    launchers = torchrun_pids(worker)
    assert sorted(ranks) == [0, 1] and len(launchers) == 1, (ranks, launchers)

    assert jobs.request_cancel(session, job.id).cancel_requested
    done = wait_for_status(session, job.id, {JobStatus.cancelled, JobStatus.failed, JobStatus.succeeded}, 60, [worker])
    assert done.status == JobStatus.cancelled, done.error
    assert wait_gone([*ranks.values(), *launchers]) == []  # every rank stopped, none orphaned
    stopped_at = checkpoint_step(workbench_env.data_dir / done.run_dir)
    assert stopped_at is not None and stopped_at < max_steps, "the run finished before the cancel; raise max_steps"
    assert loss_steps(session, job.id)[-1] == stopped_at  # both ranks stopped on the same step, rank 0 saved it

    jobs.resume_job(session, job.id, devices=1)  # the 2-rank checkpoint resumes on one process
    done = wait_for_status(session, job.id, {JobStatus.succeeded, JobStatus.failed}, 240, [worker])
    assert done.status == JobStatus.succeeded, done.error
    assert done.attempts == 2 and done.progress == 1.0
    lines = job_log(session, job.id)
    assert f"resuming from the checkpoint at step {stopped_at}" in lines
    assert sum(line.startswith("rank 0 of 2 (pid") for line in lines) == 1  # the second attempt ran in-process
    assert any("data parallel: 2 ranks" in line for line in lines)
    assert any("torch threads: 1 (2 cores ÷ 2 job processes" in line for line in lines), lines

    # One model, each metric once per step: rank 1 wrote nothing.
    session.rollback()
    assert len(session.scalars(select(Model).where(Model.job_id == job.id)).all()) == 1
    assert loss_steps(session, job.id) == list(range(1, max_steps + 1))
    rows = session.execute(select(Metric.name, Metric.step).where(Metric.job_id == job.id)).all()
    assert max(Counter(rows).values()) == 1
    assert worker.process.poll() is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broker", ["redis6379"], indirect=True)
def test_a_killed_rank_fails_the_attempt_with_an_error_naming_it(
        broker, workbench_env, session, dataset, small_tokenizer, start_worker):
    worker = start_worker(*TWO_SLOTS, **FAST_BEATS)
    max_steps = 150
    job = submit_on_devices(session, run_params(small_tokenizer, dataset, max_steps=max_steps, checkpoint_every=10),
                            devices=2)
    run_dir = workbench_env.data_dir / f"runs/{job.id}"
    wait_for(lambda: (checkpoint_step(run_dir) or 0) >= 10 or job_snapshot(session, job.id).status.finished, 180,
             "a checkpoint", session, job.id, [worker])
    assert job_snapshot(session, job.id).status == JobStatus.running, job_snapshot(session, job.id).error
    ranks = rank_pids(worker)
    launchers = torchrun_pids(worker)
    os.kill(ranks[1], signal.SIGKILL)

    failed = wait_for_status(session, job.id, {JobStatus.failed, JobStatus.succeeded, JobStatus.cancelled}, 60,
                             [worker])
    assert failed.status == JobStatus.failed, job_log(session, job.id)
    assert failed.error.startswith(f"rank 1 of 2 (pid {ranks[1]}") and "killed by SIGKILL" in failed.error, \
        failed.error
    assert wait_gone([*ranks.values(), *launchers]) == []
    checkpoint_at_kill = checkpoint_step(run_dir)
    assert checkpoint_at_kill < max_steps, "the run finished before the kill; raise max_steps"
    assert any("the end of torchrun's output" in line for line in job_log(session, job.id))

    assert failed.resumable and worker.process.poll() is None  # resuming it is test_multi_node's case
