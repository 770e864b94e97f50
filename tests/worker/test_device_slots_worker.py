"""A real worker with two device slots (`python -m worker.runtime.main --processes 2`: the prefork pool, one child per
slot) over the Redis on 127.0.0.1:6379 and a SQLite database: two 1-device jobs run side by side, each on its own slot
in its own process; a warm shutdown of the worker (SIGTERM to its main process) reaches both jobs in the children,
which checkpoint and go back to the queue; a second 2-slot worker finishes both from their checkpoints."""

from __future__ import annotations

import os
import signal
import time

import pytest

from db.models import JobStatus
from tests.support.worker_processes import (TINY_RUN, checkpoint_step, job_log, job_snapshot, loss_steps, wait_for,
                                            wait_for_status)
from worker.jobs import lifecycle as jobs

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_one_device_jobs_run_side_by_side_and_survive_a_warm_shutdown(workbench_env, job_queue, session, dataset,
                                                                          small_tokenizer, start_worker):
    from db.settings import get_settings
    from worker.jobs.presence import seen_workers

    settings = get_settings()  # with the test's queue on the real Redis (job_queue)
    worker = start_worker("--processes", "2")
    deadline = time.monotonic() + 60
    while not (seen := seen_workers(settings.broker_url, job_queue, settings.stale_after_seconds)):
        assert worker.process.poll() is None and time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.2)
    assert seen[0]["devices"] == ["cpu0", "cpu1"]

    started = time.monotonic()
    run = {**TINY_RUN, "tokenizer": small_tokenizer, "dataset_id": dataset.id, "max_steps": 150, "log_every": 5,
           "eval_every": 0, "checkpoint_every": 0}
    ids = [jobs.submit_job(session, "pretrain", {**run, "name": name, "seed": seed}).id
           for name, seed in (("first", 1), ("second", 2))]
    # Both run at once, on different slots, in different processes of the one worker.
    wait_for(lambda: all(loss_steps(session, job_id) for job_id in ids), 120, "both jobs to train at once",
             session, ids[0], [worker])
    both_running = time.monotonic() - started
    running = [job_snapshot(session, job_id) for job_id in ids]
    assert [job.status for job in running] == [JobStatus.running] * 2
    assert sorted(slot for job in running for slot in job.assigned_devices) == ["cpu0", "cpu1"]
    hosts = {job.worker_host for job in running}
    assert len(hosts) == 2 and len({host.rsplit(":", 1)[0] for host in hosts}) == 1

    # A warm shutdown (SIGTERM to the main process only): the flag reaches the jobs in both children.
    os.kill(worker.pid, signal.SIGTERM)
    requeued = [wait_for_status(session, job_id, {JobStatus.queued, JobStatus.failed, JobStatus.succeeded}, 60, [])
                for job_id in ids]
    assert [job.status for job in requeued] == [JobStatus.queued] * 2, [job.error for job in requeued]
    stopped_at = [checkpoint_step(workbench_env.data_dir / job.run_dir) for job in requeued]
    assert all(step and step < 150 for step in stopped_at), stopped_at
    assert worker.process.wait(timeout=30) == 0

    second = start_worker("--processes", "2")
    done = [wait_for_status(session, job_id, {JobStatus.succeeded, JobStatus.failed}, 240, [second]) for job_id in ids]
    assert [job.status for job in done] == [JobStatus.succeeded] * 2, [job.error for job in done]
    assert [job.attempts for job in done] == [2, 2]
    for job, step in zip(done, stopped_at):
        assert f"resuming from the checkpoint at step {step}" in job_log(session, job.id)
    a, b = done
    assert a.started_at < b.finished_at and b.started_at < a.finished_at  # the second worker ran them side by side too
    print(f"both training {both_running:.1f}s after submit; stopped at steps {stopped_at} by the warm shutdown; "
          f"both done {time.monotonic() - started:.1f}s after submit")
