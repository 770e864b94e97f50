"""One job on two machines, tested on one: two real workers (`python -m worker.runtime.main`) are its two nodes
(worker/runtime/rendezvous.py), over the Redis on 127.0.0.1:6379 (a queue of the test's own) and SQLite, CPU gloo,
each node 1 process; the rendezvous endpoint goes through the database. Killing one node's worker during
training fails the attempt and leaves nothing running; the job then continues from its checkpoint to one model
with each metric once: after losing the follower, resumed by hand on the one machine left (`nodes` 1, world
size 2 → 1); after losing the leader (which hosts the rendezvous store and writes the checkpoints), requeued by
the reaper and run by the survivor and a new worker, with nobody resuming it. A job whose second worker
never comes fails after the rendezvous timeout saying so.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import select

from db.models import JobNode, JobStatus, Metric, Model
from tests.support.job_ranks import rank_pids, torchrun_pids, wait_gone
from tests.support.worker_processes import (TINY_RUN, checkpoint_step, job_log, job_snapshot, loss_steps, wait_for,
                                            wait_for_status)
from worker.jobs import lifecycle as jobs

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

NODE = {"WORKBENCH_HEARTBEAT_SECONDS": "0.5", "WORKBENCH_STALE_AFTER_SECONDS": "4",
        "WORKBENCH_NODE_ADDRESS": "127.0.0.1", "WORKBENCH_RENDEZVOUS_TIMEOUT_S": "60",
        # Two workers on one machine: each rank takes half the cores (llm/threads.py), as an admin would say.
        "WORKBENCH_JOB_PROCESSES": "2"}


@pytest.mark.parametrize("lost", ["follower", "leader"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broker", ["redis6379"], indirect=True)
def test_a_job_on_two_workers_survives_losing_one_and_resumes_to_one_model(
        lost, broker, workbench_env, session, dataset, small_tokenizer, start_worker):
    started = time.monotonic()
    workers = [start_worker(**NODE), start_worker(**NODE)]
    max_steps = 150
    job = jobs.submit_job(session, "pretrain", {"dataset_id": dataset.id, **TINY_RUN, "tokenizer": small_tokenizer,
                                                "log_every": 1, "eval_every": 0, "max_steps": max_steps,
                                                "checkpoint_every": 10, "nodes": 2})
    run_dir = workbench_env.data_dir / f"runs/{job.id}"
    wait_for(lambda: (checkpoint_step(run_dir) or 0) >= 10 or job_snapshot(session, job.id).status.finished, 180,
             "a checkpoint", session, job.id, workers)
    running = job_snapshot(session, job.id)
    assert running.status == JobStatus.running, running.error
    leader = next(worker for worker in workers if f"workbench-{worker.pid}@" in running.worker_host)
    follower = next(worker for worker in workers if worker is not leader)
    session.rollback()
    nodes = session.scalars(select(JobNode).where(JobNode.job_id == job.id).order_by(JobNode.node_rank)).all()
    assert [(node.node_rank, node.attempt) for node in nodes] == [(0, 1), (1, 1)]
    assert nodes[0].endpoint.startswith("127.0.0.1:") and f"workbench-{follower.pid}@" in nodes[1].worker_host
    ranks = {**rank_pids(leader), **rank_pids(follower)}
    assert sorted(ranks) == [0, 1], ranks  # one global rank on each node
    processes = [*ranks.values(), *torchrun_pids(leader), *torchrun_pids(follower)]

    print(f"checkpoint at step 10 on two nodes {time.monotonic() - started:.1f} s after the workers started")
    if lost == "follower":
        # The leader sees its rank's partner go: the attempt fails naming the lost node, and a person resumes it.
        follower.kill_hard()
        killed = time.monotonic()
        failed = wait_for_status(session, job.id, {JobStatus.failed, JobStatus.succeeded, JobStatus.cancelled}, 90,
                                 [leader])
        assert failed.status == JobStatus.failed, job_log(session, job.id)
        assert failed.error.startswith(f"node 1 of 2 (workbench-{follower.pid}@") and "stopped during training" in \
            failed.error, failed.error
        print(f"failed {time.monotonic() - killed:.1f} s after the kill")
        assert wait_gone(processes) == []  # no rank of either node is left
        checkpoint_at_kill = checkpoint_step(run_dir)
        assert checkpoint_at_kill < max_steps, "the run finished before the kill; raise max_steps"
        # That machine is gone: the job goes on with the one that is left, at world size 1 (its 2-rank checkpoint
        # resumes there, with the same global batch).
        survivor, replacement = leader, None
        resumed_job = jobs.resume_job(session, job.id, nodes=1)
        assert resumed_job.params["nodes"] == 1
    else:
        # The leader's worker goes with the rendezvous store and the job's records: the follower's rank fails,
        # the reaper (in the surviving worker) sees the leader's heartbeat stop and requeues the job, which the
        # two live workers then run from the last checkpoint, with nobody resuming it by hand.
        leader.kill_hard()
        assert wait_gone(processes) == []  # no rank of the first attempt is left on either node
        checkpoint_at_kill = checkpoint_step(run_dir)  # only the leader's rank 0 wrote them, and it is gone
        assert checkpoint_at_kill < max_steps, "the run finished before the kill; raise max_steps"
        survivor, replacement = follower, start_worker(**NODE)
    resumed = time.monotonic()
    alive = [worker for worker in (survivor, replacement) if worker is not None]
    done = wait_for_status(session, job.id, {JobStatus.succeeded, JobStatus.failed}, 240, alive)
    print(f"resumed on {len(alive)} node(s) and succeeded in {time.monotonic() - resumed:.1f} s")
    assert done.status == JobStatus.succeeded and done.attempts == 2, job_log(session, job.id)
    lines = job_log(session, job.id)
    if lost == "leader":
        assert any(line.startswith(f"worker lost: workbench-{leader.pid}@") and "requeued" in line for line in lines)
    assert f"resuming from the checkpoint at step {checkpoint_at_kill}" in lines
    assert sum(line.startswith("node 1 of 2 joined: ") for line in lines) == (2 if lost == "leader" else 1)
    assert loss_steps(session, job.id) == list(range(1, max_steps + 1))
    session.rollback()
    rows = session.execute(select(Metric.name, Metric.step).where(Metric.job_id == job.id)).all()
    assert max(Counter(rows).values()) == 1
    assert len(session.scalars(select(Model).where(Model.job_id == job.id)).all()) == 1
    assert all(worker.process.poll() is None for worker in alive)
    left = wait_gone(set().union(*(torchrun_pids(worker) for worker in alive)))
    # The launches ended with the job (on failure: which pids are left, and the job's node lines). A follower that
    # ended its torchrun on seeing the job succeed left node 0's waiting 300 s at torchrun's exit barrier.
    assert left == [], (left, [line for line in job_log(session, job.id) if "node" in line or "attempt" in line])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broker", ["redis6379"], indirect=True)
def test_a_job_whose_second_worker_never_comes_fails_after_the_rendezvous_timeout(
        broker, workbench_env, session, dataset, small_tokenizer, start_worker):
    worker = start_worker(**{**NODE, "WORKBENCH_RENDEZVOUS_TIMEOUT_S": "5"})
    job = jobs.submit_job(session, "pretrain", {"dataset_id": dataset.id, **TINY_RUN, "tokenizer": small_tokenizer,
                                                "max_steps": 5, "nodes": 2})
    wait_for(lambda: any("waiting up to 5 s for 1 more worker" in line for line in job_log(session, job.id)), 60,
             "the wait to be said", session, job.id, [worker])
    failed = wait_for_status(session, job.id, {JobStatus.failed, JobStatus.succeeded}, 90, [worker])
    assert failed.status == JobStatus.failed
    assert failed.error.startswith("not enough workers came: 1 of the 2 nodes this job needs joined the rendezvous "
                                   "within 5 s"), failed.error
    assert loss_steps(session, job.id) == []
    assert worker.process.poll() is None
