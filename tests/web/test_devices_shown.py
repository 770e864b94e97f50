"""Device slots where people see them (issue 20 item 3): /api/health lists each worker's slots and the running job
holding each (its presence in the real Redis, the job in the database), /api/jobs gives a job's devices (and resumes
it on another number), and the Jobs tab's header and worker lines say the same."""

from __future__ import annotations

import pytest

from db.models import JobStatus
from tests.conftest import ADMIN, TRAINER
from tests.support.records import make_job
from web.ui.devices_view import job_devices_text, workers_html
from worker.jobs.presence import WorkerPresence

@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_health_and_the_job_show_which_job_holds_which_device(job_queue, client, session, users):
    from db.settings import get_settings

    settings = get_settings()
    worker = WorkerPresence(settings.broker_url, "workbench-9@gpubox", settings.worker_queues, settings.heartbeat_seconds,
                            settings.stale_after_seconds, capacity={"ram_bytes": 8 << 30, "gpu_memory_bytes": []},
                            devices=["0", "1"])
    assert worker.beat()
    try:
        running = make_job(session, users["trainer"], JobStatus.running, worker_host="workbench-9@gpubox:4242",
                           devices=1, assigned_devices=["1"])
        make_job(session, users["trainer"], JobStatus.running, worker_host="workbench-10@gpubox:77",
                 assigned_devices=["0"])  # another worker's slot 0: not this one's
        body = client.get("/api/health", auth=ADMIN).json()
        [seen] = [w for w in body["seen_workers"] if w["node"] == "workbench-9@gpubox"]
        assert seen["devices"] == ["0", "1"]
        assert seen["device_jobs"] == {"0": None, "1": running}
        job = client.get(f"/api/jobs/{running}", auth=TRAINER).json()
        assert (job["devices"], job["assigned_devices"]) == (1, ["1"])
        # Resume a cancelled 2-device job on 1 device, or refuse more than the live worker has.
        stopped = make_job(session, users["trainer"], JobStatus.cancelled, devices=2)
        refused = client.post(f"/api/jobs/{stopped}/resume", params={"devices": 4}, auth=TRAINER)
        assert refused.status_code == 422 and "4 asked, the largest worker has 2 (workbench-9@gpubox)" in refused.text
        resumed = client.post(f"/api/jobs/{stopped}/resume", params={"devices": 1}, auth=TRAINER).json()
        assert (resumed["status"], resumed["devices"], resumed["params"]["devices"]) == ("queued", 1, 1)
    finally:
        worker.stop()


def test_the_jobs_tab_says_devices_per_job_and_per_worker():
    from web.ui.jobs_tab import detail_header_html

    header = detail_header_html({"id": 7, "kind": "pretrain", "status": "running", "worker_host": "w@box:1",
                                 "assigned_devices": ["0", "1"], "devices": 2, "progress": 0.5})
    assert "devices 0, 1" in header
    assert job_devices_text({"status": "queued", "devices": 4}) == "asks for 4 devices"
    assert job_devices_text({"status": "queued", "devices": 1}) is None
    line = workers_html([{"node": "workbench-9@gpubox", "alive": True, "device_jobs": {"0": None, "1": 7}}])
    assert "workbench-9@gpubox</b>: 1 of 2 devices free" in line and "#7" in line
    assert workers_html([]) == ""
