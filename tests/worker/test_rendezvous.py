"""The pieces of a launch that need no process (worker/runtime/rendezvous.py, launcher.py): places in a multi-node
job's rendezvous are taken once each, node 0 gives up on a follower that stops beating before the ranks start,
a follower lets its ranks finish a job that ended, a torchrun left at its exit barrier is ended, torchrun's root
cause becomes a sentence naming the rank, and the torchrun command a node runs."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from db.models import Job, JobNode, JobStatus, utcnow
from worker.jobs import lifecycle as jobs
from worker.runtime import launcher, rendezvous

# What torchrun printed when rank 1 of 2 was killed (torch 2.13, CPU), trimmed.
KILLED_OUTPUT = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
=======================================================
worker.runtime.rank_entry FAILED
-------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-07_07:55:18
  host      : gpu-a
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 12775)  (SIGTERM)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 12775
-------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-07_07:55:18
  host      : gpu-a
  rank      : 1 (local_rank: 1)
  exitcode  : {exitcode} (pid: 12776)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 12776
======================================================="""


def running_job(session, nodes: int, devices: int = 1) -> Job:
    job = Job(kind="pretrain", status=JobStatus.running, params={"nodes": nodes, "devices": devices}, attempts=1,
              devices=devices, worker_host="workbench-1@a:1")
    session.add(job)
    session.commit()
    return job


@pytest.fixture
def on_localhost(monkeypatch):
    monkeypatch.setenv(rendezvous.NODE_ADDRESS_ENV, "127.0.0.1")


def test_each_place_is_taken_once_and_a_worker_never_takes_two(workbench_env, session, on_localhost):
    job = running_job(session, nodes=3)
    leader = rendezvous.publish(session, job.id, 1, "workbench-1@a:1")
    assert (leader.node_rank, leader.nodes) == (0, 3) and leader.endpoint.startswith("127.0.0.1:")
    assert rendezvous.join(session, job.id, "workbench-1@a:7") is False  # node 0's own worker, another process
    first = rendezvous.join(session, job.id, "workbench-2@b:2")
    assert (first.node_rank, first.endpoint) == (1, leader.endpoint)
    assert rendezvous.join(session, job.id, "workbench-2@b:9") is False
    assert rendezvous.join(session, job.id, "workbench-3@c:3").node_rank == 2
    assert rendezvous.join(session, job.id, "workbench-4@d:4") is None  # full
    # Another place cannot be taken twice, even by a racer that looked before the first took it.
    session.add(JobNode(job_id=job.id, attempt=1, node_rank=2, worker_host="workbench-5@e:5"))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    assert rendezvous.count_joined(session, job.id, 1) == 3


def test_a_worker_joins_only_with_the_jobs_devices_free_and_only_a_running_job(workbench_env, session, on_localhost):
    job = running_job(session, nodes=2, devices=2)
    rendezvous.publish(session, job.id, 1, "workbench-1@a:1")
    assert rendezvous.join(session, job.id, "workbench-2@b:2", free_slots=["cpu1"]) is False  # passed on to another
    place = rendezvous.join(session, job.id, "workbench-2@b:2", free_slots=["cpu1", "cpu2", "cpu3"])
    assert (place.node_rank, place.devices) == (1, ("cpu1", "cpu2"))
    single = running_job(session, nodes=1)
    assert rendezvous.join(session, single.id, "workbench-2@b:2") is None  # not a multi-node job
    job.status = JobStatus.failed
    session.commit()
    assert rendezvous.join(session, job.id, "workbench-3@c:3") is None


def test_a_followers_slots_are_held_so_another_process_of_its_worker_claims_only_the_others(
        workbench_env, session, on_localhost):
    job = running_job(session, nodes=2)  # 1 device per node; node 0 is workbench-1@a
    rendezvous.publish(session, job.id, 1, "workbench-1@a:1")
    slots = ["cpu0", "cpu1"]
    place = launcher.take_place(session, job.id, "workbench-2@b:2", slots)  # a 2-slot worker follows
    assert place.devices == ("cpu0",) and session.get(JobNode, place.row_id).devices == ["cpu0"]
    assert jobs.held_slots(session, "workbench-2@b") == [(job.id, ["cpu0"])]
    assert jobs.held_slots(session, "workbench-1@a") == [(job.id, None)]  # node 0 holds the job's own slots
    assert launcher.free_slots_here(session, "workbench-2@b:3", slots) == ["cpu1"]

    # Another process of the same worker claims: a 2-device job does not fit, a 1-device one gets cpu1 only.
    wide = Job(kind="pretrain", status=JobStatus.queued, params={"devices": 2}, devices=2, priority=5)
    narrow = Job(kind="pretrain", status=JobStatus.queued, params={}, devices=1)
    session.add_all([wide, narrow])
    session.commit()
    claimed = jobs.claim_next_job(session, "workbench-2@b:3", slots=slots)
    assert (claimed.id, claimed.assigned_devices) == (narrow.id, ["cpu1"])
    assert jobs.claim_next_job(session, "workbench-2@b:4", slots=slots) is None
    assert jobs.held_slots(session, "workbench-2@b") == [(job.id, ["cpu0"]), (narrow.id, ["cpu1"])]

    rendezvous.leave(session, place)  # its torchrun exited: the slot is free again
    assert jobs.held_slots(session, "workbench-2@b") == [(narrow.id, ["cpu1"])]


def test_node_zero_gives_up_on_a_follower_that_stops_beating_before_the_ranks_start(workbench_env, session,
                                                                                     on_localhost, tmp_path):
    job = running_job(session, nodes=2)
    leader = rendezvous.publish(session, job.id, 1, "workbench-1@a:1")
    follower = rendezvous.join(session, job.id, "workbench-2@b:2")
    watch = launcher.NodeWatch(session, leader, workbench_env, tmp_path)
    assert watch() is None  # both beat
    session.get(JobNode, follower.row_id).heartbeat_at = utcnow() - timedelta(
        seconds=workbench_env.stale_after_seconds + 1)
    session.commit()
    watch._next = 0.0
    assert watch() == "node 1 (workbench-2@b:2) stopped during the rendezvous"
    (tmp_path / launcher.STARTED_FILE).touch()  # the ranks started: a lost node is the training's failure now
    watch._next = 0.0
    assert watch() is None
    assert [row.node_rank for row in watch.lost_nodes(wait_s=0)] == [1]


def test_a_follower_lets_its_ranks_finish_a_job_that_ended_and_ends_its_launch_when_node_zero_is_lost(
        workbench_env, session, on_localhost, tmp_path):
    job = running_job(session, nodes=2)
    rendezvous.publish(session, job.id, 1, "workbench-1@a:1")
    follower = rendezvous.join(session, job.id, "workbench-2@b:2")
    watch = launcher.NodeWatch(session, follower, workbench_env, tmp_path)
    assert watch() is None
    # Rank 0 recorded success: this node's ranks are ending on their own, and their torchrun must reach the exit
    # barrier that node 0's torchrun waits at (ending it here kept node 0's worker for 300 s).
    job.status = JobStatus.succeeded
    session.commit()
    watch._next = 0.0
    assert watch() is None
    watch._next, watch._finished_at = 0.0, watch._finished_at - workbench_env.stale_after_seconds - 1
    assert watch() == "the job ended but this node's ranks did not"
    # Node 0 was lost and the reaper put the job back in the queue: this attempt is over here at once.
    job.status, job.attempts = JobStatus.queued, 1
    session.commit()
    watch._next, watch._finished_at = 0.0, None
    assert watch() == "the job is no longer in the attempt this node joined"


def test_a_torchrun_left_waiting_at_its_exit_barrier_after_its_ranks_finished_is_ended_as_a_success(
        tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "EXIT_BARRIER_GRACE_S", 0.5)
    # A stand-in for torchrun that waits 3 s and exits 7: while one of its two ranks runs, it is left alone.
    waiter = [sys.executable, "-c", "import time, sys; time.sleep(3); sys.exit(7)"]
    launcher.rank_finished_path(tmp_path, 0).touch()
    started = time.monotonic()
    assert launcher.supervise(waiter, dict(os.environ), tmp_path, local_ranks=2)[0] == 7
    assert time.monotonic() - started >= 3
    # Both ranks finished: after the grace it is ended, and the launch counts as having exited 0.
    launcher.rank_finished_path(tmp_path, 1).touch()
    started = time.monotonic()
    returncode, _, aborted = launcher.supervise(waiter, dict(os.environ), tmp_path, local_ranks=2)
    assert (returncode, aborted) == (0, None)
    assert time.monotonic() - started < 2.5


def test_torchruns_root_cause_becomes_a_sentence_naming_the_rank(tmp_path):
    killed = KILLED_OUTPUT.format(exitcode=-9)
    assert launcher.root_cause(killed) == launcher.RankFailure(1, 1, -9, 12776, "gpu-a")
    assert launcher.failure_message(1, killed, tmp_path, 2) == (
        "rank 1 of 2 (pid 12776 on gpu-a) was killed by SIGKILL; the checkpoint is kept, resume to continue")
    raised = KILLED_OUTPUT.format(exitcode=1)
    launcher.rank_error_path(tmp_path, 1).write_text(json.dumps({"error": "the loss became nan at step 7"}))
    assert launcher.failure_message(1, raised, tmp_path, 2) == (
        "rank 1 of 2 (pid 12776 on gpu-a) failed: the loss became nan at step 7")
    assert launcher.failure_message(1, "Traceback: something else", tmp_path, 2).startswith(
        "torchrun exited with code 1 before any rank reported a failure")


def test_the_torchrun_command_of_one_machine_and_of_a_node():
    alone = launcher.torchrun_command(7, 2, 4)
    assert alone[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=4" in alone
    assert "--rdzv-endpoint=127.0.0.1:0" in alone and "--rdzv-id=job-7-attempt-2" in alone
    assert alone[-4:] == ["-m", "worker.runtime.rank_entry", "7", "2"]
    node = launcher.torchrun_command(7, 2, 1, nodes=2, endpoint="10.0.0.5:29400", join_timeout_s=60, is_host=False,
                                     local_address="10.0.0.6")
    assert {"--nnodes=2", "--rdzv-endpoint=10.0.0.5:29400", "--rdzv-conf=join_timeout=60,is_host=0",
            "--local-addr=10.0.0.6"} <= set(node)


def test_each_rank_gets_its_share_of_the_cores_and_its_own_gpu(workbench_env, monkeypatch, tmp_path):
    from dataclasses import replace

    from llm.threads import JOB_PROCESSES_ENV
    from worker.jobs.devices import DEVICES_ENV
    from worker.runtime.rank_entry import rank_settings

    monkeypatch.setenv(JOB_PROCESSES_ENV, "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpus = launcher.rank_environment(2, tmp_path, ["4", "5"])
    assert (gpus[JOB_PROCESSES_ENV], gpus["CUDA_VISIBLE_DEVICES"], gpus[DEVICES_ENV]) == ("2", "4,5", "4,5")
    assert gpus[launcher.CONTROL_DIR_ENV] == str(tmp_path)
    cpus = launcher.rank_environment(2, tmp_path, ["cpu0", "cpu1"])
    assert "CUDA_VISIBLE_DEVICES" not in cpus and cpus[DEVICES_ENV] == "cpu0,cpu1"

    auto = replace(workbench_env, device="auto")
    monkeypatch.setenv(DEVICES_ENV, "4,5")  # what a rank of the job on GPUs 4 and 5 sees
    assert rank_settings(auto, 1).device == "cuda:1"  # its own GPU: visible GPU 1 is GPU 5
    assert rank_settings(replace(workbench_env, device="cpu"), 1).device == "cpu"  # a pinned device stays
    monkeypatch.setenv(DEVICES_ENV, "cpu0,cpu1")
    assert rank_settings(auto, 1).device == "auto"
