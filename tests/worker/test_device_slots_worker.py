"""A real worker with two device slots (`python -m worker.runtime.main --processes 2`: the prefork pool, one child per
slot) over the Redis on 127.0.0.1:6379 and a SQLite database: two 1-device jobs run side by side, each on its own slot
in its own process, and the worker's presence says what it has."""

from __future__ import annotations

import time

import pytest

from db.models import JobStatus
from tests.support.worker_processes import TINY_RUN, job_snapshot, wait_for, wait_for_status
from worker.jobs import lifecycle as jobs

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_one_device_jobs_run_side_by_side_on_a_two_slot_worker(workbench_env, job_queue, session, dataset,
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
    run = {**TINY_RUN, "tokenizer": small_tokenizer, "dataset_id": dataset.id, "max_steps": 60, "log_every": 10,
           "eval_every": 0, "checkpoint_every": 0}
    first = jobs.submit_job(session, "pretrain", {**run, "name": "first"})
    second = jobs.submit_job(session, "pretrain", {**run, "name": "second", "seed": 7})
    # Both run at once: the second is claimed while the first is still running.
    wait_for(lambda: all(job_snapshot(session, job_id).status == JobStatus.running for job_id in (first.id, second.id)),
             120, "both jobs to run at once", session, first.id, [worker])
    both_running = time.monotonic() - started
    done = [wait_for_status(session, job_id, {JobStatus.succeeded, JobStatus.failed}, 240, [worker])
            for job_id in (first.id, second.id)]
    assert [job.status for job in done] == [JobStatus.succeeded] * 2, [job.error for job in done]
    assert sorted(slot for job in done for slot in job.assigned_devices) == ["cpu0", "cpu1"]
    hosts = {job.worker_host for job in done}
    assert len(hosts) == 2 and len({host.rsplit(":", 1)[0] for host in hosts}) == 1  # two processes, one worker
    a, b = done
    assert a.started_at < b.finished_at and b.started_at < a.finished_at  # their runs overlapped
    print(f"both running {both_running:.1f}s after submit; both done in {time.monotonic() - started:.1f}s")
