"""Device slots (worker/jobs/devices.py, issue 20 item 3): a worker's declaration, picking free slots, the claim
that takes only a job whose `devices` fit the worker's free slots, the submit check against the live workers'
slots (their presence beats in the real Redis), and where a job on a slot runs."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import DatasetKind, JobEvent, JobStatus
from tests.support.jobs import log_lines
from tests.support.records import add_dataset
from worker.jobs import devices
from worker.jobs import lifecycle as jobs
from worker.jobs.params import JobParamsError

# ----------------------------------------------------------------------------- the pure functions


def test_a_worker_declares_gpus_or_processes():
    assert devices.declare_slots(gpus="0,1,2,3") == ["0", "1", "2", "3"]
    assert devices.declare_slots(gpus=" 3, GPU-8f1c ") == ["3", "GPU-8f1c"]
    assert devices.declare_slots(processes=2) == ["cpu0", "cpu1"]
    # Nothing declared: the GPUs it sees, else one CPU slot per --concurrency (what prefork -c N meant before).
    assert devices.declare_slots(detected_gpus=["4", "5"]) == ["4", "5"]
    assert devices.declare_slots(detected_gpus=[]) == ["cpu0"]
    assert devices.declare_slots(concurrency=3, detected_gpus=[]) == ["cpu0", "cpu1", "cpu2"]
    assert devices.declare_slots(gpus="0,1,2,3", concurrency=1) == ["0", "1", "2", "3"]  # one job at a time, any size


@pytest.mark.parametrize("options, message", [
    ({"gpus": "0,0"}, "--gpus names 0 twice"),
    ({"gpus": ","}, "--gpus needs at least one GPU"),
    ({"gpus": "0;1"}, "is not a GPU index or UUID"),
    ({"gpus": "cpu0"}, "is not a GPU index or UUID"),
    ({"processes": 0}, "--processes must be a whole number from 1 to 64"),
    ({"gpus": "0", "processes": 2}, "not both"),
    ({"gpus": "0,1", "concurrency": 3}, "this worker has 2 device slots (0, 1), so it runs 1 to 2 jobs at once"),
])
def test_a_declaration_that_makes_no_sense_is_refused_with_why(options, message):
    with pytest.raises(devices.DeviceDeclarationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        devices.declare_slots(detected_gpus=[], **options)


def test_the_worker_layout_keeps_one_slot_solo_and_runs_one_job_per_slot_otherwise():
    from worker.runtime.main import worker_layout

    assert worker_layout(processes=None) == (["cpu0"], 1, "solo") or devices.visible_gpus()  # a GPU box differs
    assert worker_layout(processes=1) == (["cpu0"], 1, "solo")
    assert worker_layout(processes=4) == (["cpu0", "cpu1", "cpu2", "cpu3"], 4, "prefork")
    assert worker_layout(gpus="0,1", concurrency=1) == (["0", "1"], 1, "solo")  # one 2-device job at a time
    assert worker_layout(processes=2, pool="threads") == (["cpu0", "cpu1"], 2, "threads")
    with pytest.raises(devices.DeviceDeclarationError, match="the solo pool runs one job at a time"):
        worker_layout(processes=2, pool="solo")


@pytest.mark.subprocess
def test_a_worker_refuses_gpus_that_torch_does_not_see():
    import os
    import subprocess
    import sys

    from tests.support.worker_processes import REPO_ROOT

    if devices.visible_gpus():
        pytest.skip("this machine has GPUs: the refusal is for GPUs that are not there")
    env = {**os.environ, "WORKBENCH_BROKER_URL": "redis://127.0.0.1:1/0"}  # refused before any broker is asked
    done = subprocess.run([sys.executable, "-m", "worker.runtime.main", "--gpus", "0,1"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "workbench worker: --gpus 0,1: PyTorch sees 0 of these GPUs" in done.stderr


def test_free_slots_and_picking_them():
    declared = ["0", "1", "2", "3"]
    assert devices.free_slots(declared, []) == declared
    assert devices.free_slots(declared, [["1"], ["3"]]) == ["0", "2"]
    # A row claimed before slots were recorded holds one slot: the first still free.
    assert devices.free_slots(declared, [None, ["0"]]) == ["2", "3"]
    assert devices.pick_slots(["0", "2"], 1) == ["0"]  # the low ones first: the high ones stay together
    assert devices.pick_slots(["0", "2"], 2) == ["0", "2"]
    assert devices.pick_slots(["0", "2"], 3) is None
    assert devices.holders(declared, [(7, ["1", "2"]), (9, None)]) == {"0": 9, "1": 7, "2": 7, "3": None}


def test_where_a_job_runs_and_what_a_launcher_narrows_to():
    assert devices.is_gpu("0") and devices.is_gpu("GPU-8f1c") and not devices.is_gpu("cpu1")
    assert devices.torch_device("5", ["4", "5"]) == "cuda:1" and devices.torch_device("cpu1", ["cpu0", "cpu1"]) == "cpu"
    assert devices.job_device("auto", ["5"], ["4", "5"]) == "cuda:1"
    assert devices.job_device("cuda", ["5"], ["4", "5"]) == "cuda:1"
    assert devices.job_device("cpu", ["5"], ["4", "5"]) == "cpu"  # a pin is kept
    assert devices.job_device("cuda:0", ["5"], ["4", "5"]) == "cuda:0"
    assert devices.job_device("auto", ["cpu1"], ["cpu0", "cpu1"]) == "auto"
    assert devices.cuda_visible_devices(["4", "GPU-8f1c"]) == "4,GPU-8f1c"
    assert devices.cuda_visible_devices(["cpu0", "cpu1"]) is None


def test_assigned_devices_of_a_row_without_them_is_its_count_of_the_workers_first_slots():
    class Row:
        assigned_devices = None
        devices = 2
        params = {"devices": 2}

    assert devices.assigned_devices(Row(), ["3", "4", "5"]) == ["3", "4"]
    assert devices.assigned_devices(Row(), ["cpu0"]) == ["cpu0", "cpu1"]  # len() is the job's count, always
    Row.devices, Row.assigned_devices = 1, ["5"]
    assert devices.assigned_devices(Row(), ["3", "4", "5"]) == ["5"]


def test_the_submit_refusal_names_the_largest_live_worker():
    workers = [{"node": "worker-a", "alive": True, "devices": ["0", "1"]},
               {"node": "worker-b", "alive": True, "devices": None},  # a worker of before slots: one
               {"node": "worker-c", "alive": False, "devices": [str(i) for i in range(8)]}]
    assert devices.devices_refusal(4, workers).startswith("4 asked, the largest worker has 2 (worker-a)")
    assert devices.devices_refusal(2, workers) is None
    assert devices.devices_refusal(4, []) is None  # nobody alive to ask: the job waits (waiting_note)


# ----------------------------------------------------------------------------- the claim (database)

def _corpus(session, settings):
    return add_dataset(session, settings, DatasetKind.text, ["the model reads tokens"] * 20, "corpus")


def _job(session, dataset_id: int, devices_asked: int, priority: int = 0) -> int:
    return jobs.create_job(session, "pretrain", {"dataset_id": dataset_id, "max_steps": 5, "devices": devices_asked,
                                                 "device": "cpu"}, priority=priority).id


def test_a_claim_refuses_a_job_too_big_for_the_free_slots_and_takes_a_smaller_one(workbench_env, session):
    dataset = _corpus(session, workbench_env)
    big = _job(session, dataset.id, 2, priority=5)   # the best job, but it needs both slots
    small = _job(session, dataset.id, 1)
    other = _job(session, dataset.id, 1)
    slots = ["cpu0", "cpu1"]
    host = "workbench-1@box"

    first = jobs.claim_next_job(session, f"{host}:11", slots=slots)  # both free: the best job takes both
    assert (first.id, first.assigned_devices, first.devices) == (big, ["cpu0", "cpu1"], 2)
    assert jobs.claim_next_job(session, f"{host}:12", slots=slots) is None  # nothing free
    assert jobs.waiting_for_slots(session, f"{host}:12", slots) == "busy"
    assert jobs.finish_job(session, big, first.attempts, JobStatus.succeeded)

    # Another 2-device job, queued behind a running 1-device one: the free slot takes the smaller job.
    again = _job(session, dataset.id, 2, priority=5)
    held = jobs.claim_next_job(session, f"{host}:11", slots=["cpu0"])  # as if the worker had one slot
    assert (held.id, held.assigned_devices) == (small, ["cpu0"])
    taken = jobs.claim_next_job(session, f"{host}:12", slots=slots)
    assert (taken.id, taken.assigned_devices) == (other, ["cpu1"])  # cpu0 is held by a process of the same worker
    assert jobs.claim_next_job(session, f"{host}:13", slots=slots) is None
    # Another worker (another node name) counts its own slots.
    elsewhere = jobs.claim_next_job(session, "workbench-2@box:21", slots=slots)
    assert (elsewhere.id, elsewhere.assigned_devices) == (again, ["cpu0", "cpu1"])
    assert any(line == f"started on {host}:12 on cpu1 (attempt 1)" for line in log_lines(session, other))


def test_a_job_bigger_than_the_worker_is_left_for_another(workbench_env, session):
    dataset = _corpus(session, workbench_env)
    _job(session, dataset.id, 4)
    assert jobs.claim_next_job(session, "workbench-1@box:1", slots=["cpu0", "cpu1"]) is None
    assert jobs.waiting_for_slots(session, "workbench-1@box:1", ["cpu0", "cpu1"]) == "elsewhere"
    # The old path (no slots: the job-layer tests play workers by hand) takes it, as before slots existed.
    assert jobs.claim_next_job(session, "test-host").devices == 4
    assert jobs.waiting_for_slots(session, "workbench-1@box:1", ["cpu0"]) is None  # nothing queued


def test_every_training_kind_declares_devices_and_nodes_once():
    from worker.jobs.params import PLACEMENT_PARAMS
    from worker.kinds import KINDS

    for kind in ("pretrain", "sft", "reward", "dpo"):
        for name in ("devices", "nodes"):
            assert KINDS[kind].params[name] is PLACEMENT_PARAMS[name], (kind, name)
    for kind in ("prepare", "train_tokenizer", "generate", "evaluate"):
        assert "devices" not in KINDS[kind].params


# ----------------------------------------------------------------------------- submit (live workers in Redis)

def _worker(node: str, slots: list[str], gpu_memory_bytes: list[int] | None = None):
    from db.settings import get_settings
    from worker.jobs.presence import WorkerPresence

    settings = get_settings()
    presence = WorkerPresence(settings.broker_url, node, settings.worker_queues, settings.heartbeat_seconds,
                              settings.stale_after_seconds,
                              capacity={"ram_bytes": 10**12, "gpu_memory_bytes": gpu_memory_bytes or []},
                              devices=slots)
    assert presence.beat()
    return presence


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_devices_above_the_largest_live_worker_are_refused_at_submit(workbench_env, job_queue, session):
    dataset = _corpus(session, workbench_env)
    params = {"dataset_id": dataset.id, "max_steps": 5, "device": "cpu", "devices": 4}
    small, big = _worker("worker-a", ["cpu0"]), _worker("worker-b", ["cpu0", "cpu1"])
    try:
        with pytest.raises(JobParamsError) as refused:
            jobs.create_job(session, "pretrain", params)
        assert refused.value.field == "devices"
        assert str(refused.value).startswith("devices: 4 asked, the largest worker has 2 (worker-b)")
        with pytest.raises(JobParamsError, match="4 asked"):  # the form's preview says the same
            jobs.preview(session, "pretrain", params)
        job = jobs.create_job(session, "pretrain", {**params, "devices": 2})
        assert (job.devices, job.params["devices"], job.params["nodes"]) == (2, 2, 1)
        assert not any("waits" in line for line in log_lines(session, job.id))
    finally:
        small.stop()
        big.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_with_no_worker_alive_the_job_is_queued_saying_what_it_waits_for(workbench_env, job_queue, session):
    dataset = _corpus(session, workbench_env)
    job = jobs.create_job(session, "pretrain", {"dataset_id": dataset.id, "max_steps": 5, "device": "cpu",
                                                "devices": 3})
    assert job.status == JobStatus.queued
    note = "no worker is alive: the job waits in the queue for a worker with 3 free devices"
    assert any(line.startswith(note) for line in log_lines(session, job.id))
    assert session.scalars(select(JobEvent.action).where(JobEvent.job_id == job.id)).all()[-1] == "waiting"
    # One device: every worker has one, nothing to say.
    single = jobs.create_job(session, "pretrain", {"dataset_id": dataset.id, "max_steps": 5, "device": "cpu"})
    assert not any("waits" in line for line in log_lines(session, single.id))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_memory_check_is_per_device(workbench_env, job_queue, session):
    """Data-parallel: each of N processes holds the whole model, so N CPU processes share the worker's RAM, and N
    GPUs are compared by the smallest of a worker that has N."""
    from db.settings import get_settings
    from worker.jobs.fit import worker_memory

    worker = _worker("worker-r", ["cpu0", "cpu1"])
    try:
        available, source = worker_memory("cpu", {"devices": 2}, get_settings())
        assert available == 10**12 // 2
        assert "RAM per process (its RAM ÷ 2 processes) of worker worker-r" in source
        assert worker_memory("cpu", {"devices": 1}, get_settings())[0] == 10**12
    finally:
        worker.stop()
    gpus = _worker("worker-g", ["0", "1"], gpu_memory_bytes=[3 << 30, 2 << 30])
    one_gpu = _worker("worker-h", ["0"], gpu_memory_bytes=[80 << 30])
    try:
        # Two devices: only a worker with two counts, and a rank may get its smaller GPU.
        available, source = worker_memory("cuda", {"devices": 2}, get_settings())
        assert (available, source) == (2 << 30, "the smallest GPU of worker worker-g, the largest of 1 live worker "
                                                "with 2 devices")
        assert worker_memory("cuda", {"devices": 1}, get_settings())[0] == 80 << 30  # as before: GPU 0 of any
    finally:
        gpus.stop()
        one_gpu.stop()


def test_a_job_resumes_on_another_number_of_devices(workbench_env, session):
    dataset = _corpus(session, workbench_env)
    job_id = _job(session, dataset.id, 2)
    jobs.request_cancel(session, job_id)
    resumed = jobs.resume_job(session, job_id, devices=1)
    assert (resumed.status, resumed.devices, resumed.params["devices"]) == (JobStatus.queued, 1, 1)
    assert log_lines(session, job_id)[-1].startswith("resumed on 1 device: queued again")
    jobs.request_cancel(session, job_id)
    with pytest.raises(JobParamsError, match="must be at most 64"):
        jobs.resume_job(session, job_id, devices=65)
    assert jobs.resume_job(session, job_id).devices == 1  # without devices: as it was
    # Several machines down to one (the one left when another is gone): nodes, alone or with devices.
    jobs.request_cancel(session, job_id)
    resumed = jobs.resume_job(session, job_id, nodes=1, devices=2)
    assert (resumed.devices, resumed.params["devices"], resumed.params["nodes"]) == (2, 2, 1)
    assert log_lines(session, job_id)[-1].startswith("resumed on 2 devices and 1 worker: queued again")
    jobs.request_cancel(session, job_id)
    with pytest.raises(JobParamsError) as refused:
        jobs.resume_job(session, job_id, nodes=0)
    assert refused.value.field == "nodes" and "positive whole number, got 0" in refused.value.message


def test_a_big_job_that_waited_long_enough_reserves_the_worker(workbench_env, session):
    """Backfilling stops once the big job has waited RESERVE_AFTER_S: the slots that free up stay free for it, and
    only jobs ahead of it in the queue may still take one."""
    from datetime import timedelta

    from sqlalchemy import update

    from db.models import Job, utcnow

    dataset = _corpus(session, workbench_env)
    slots, host = ["cpu0", "cpu1"], "workbench-1@box"
    first = _job(session, dataset.id, 1)
    assert jobs.claim_next_job(session, f"{host}:1", slots=slots).id == first  # one slot busy
    big = _job(session, dataset.id, 2)
    small = _job(session, dataset.id, 1)
    session.execute(update(Job).where(Job.id == big)
                    .values(created_at=utcnow() - timedelta(seconds=jobs.RESERVE_AFTER_S + 1)))
    session.commit()
    assert jobs.claim_next_job(session, f"{host}:2", slots=slots) is None  # cpu1 stays free for the big job
    urgent = _job(session, dataset.id, 1, priority=9)  # ahead of the big job: still runs
    assert jobs.claim_next_job(session, f"{host}:2", slots=slots).id == urgent
    for job_id in (first, urgent):
        assert jobs.finish_job(session, job_id, 1, JobStatus.succeeded)
    assert jobs.claim_next_job(session, f"{host}:2", slots=slots).id == big
    assert jobs.claim_next_job(session, "workbench-2@box:1", slots=slots).id == small  # another worker's slots
