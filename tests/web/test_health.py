"""/api/health reports each part: database, broker, the workers seen (their presence beats) and the
processes `serve` supervises; 503 when one is down, 200 when all are up. Real Redis, real database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from db.settings import get_settings
from web.app import create_app
from worker.runtime.supervisor import Supervisor
from worker.jobs.presence import WorkerPresence

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


HEALTH_ADMIN = ("health-admin", "health-admin-password")


@pytest.fixture
def fast_beats(workbench_env, job_queue, monkeypatch, session):
    """Heartbeat 0.2 s, stale after 1 s, a queue (and so a worker registry) of the test's own; an admin who
    may see the parts."""
    from db.models import Role
    from db.users import create_user

    monkeypatch.setenv("WORKBENCH_HEARTBEAT_SECONDS", "0.2")
    monkeypatch.setenv("WORKBENCH_STALE_AFTER_SECONDS", "1")
    create_user(session, *HEALTH_ADMIN, Role.admin)
    create_user(session, "health-labeler", "health-labeler-password", Role.labeler)
    session.commit()
    return get_settings()


def test_outsiders_see_up_or_down_only(fast_beats):
    with health_client(fast_beats) as client:
        for auth in (None, ("health-labeler", "health-labeler-password"), (HEALTH_ADMIN[0], "wrong")):
            answer = client.get("/api/health", auth=auth)
            assert (answer.status_code, answer.json()) == (200, {"status": "ok"}), auth
        assert set(client.get("/api/health", auth=HEALTH_ADMIN).json()) >= {"database", "broker", "workers"}
    supervisor = Supervisor(poll_interval_s=0.05)
    supervisor.add("worker", Sleeper)  # serve runs a worker that has not beaten: down
    try:
        with health_client(fast_beats, supervisor) as client:
            down = client.get("/api/health")
            assert (down.status_code, down.json()) == (503, {"status": "error"})
    finally:
        supervisor.stop()


def health(settings, supervisor=None) -> tuple[int, dict]:
    with health_client(settings, supervisor) as client:
        return ask(client)


def health_client(settings, supervisor=None) -> TestClient:
    app = create_app(settings)
    if supervisor is not None:
        app.state.supervisor = supervisor
    return TestClient(app)


def ask(client: TestClient) -> tuple[int, dict]:
    """An admin's view of /api/health (outsiders see the status only: test_outsiders_see_up_or_down_only)."""
    answer = client.get("/api/health", auth=HEALTH_ADMIN)
    return answer.status_code, answer.json()


def presence(settings, node: str) -> WorkerPresence:
    return WorkerPresence(settings.broker_url, node, settings.worker_queues, settings.heartbeat_seconds,
                          settings.stale_after_seconds)


def test_no_worker_ever_seen_is_not_an_outage(fast_beats):
    code, body = health(fast_beats)
    assert code == 200, body
    assert (body["status"], body["database"], body["broker"], body["workers"]) == ("ok", "ok", "ok", "none seen")
    assert body["seen_workers"] == [] and body["processes"] == {}


def test_a_worker_that_stops_beating_is_down_until_another_beats(fast_beats):
    worker = WorkerPresence(fast_beats.broker_url, "workbench-1@box", fast_beats.worker_queues,
                            fast_beats.heartbeat_seconds, fast_beats.stale_after_seconds,
                            capacity={"ram_bytes": 8 << 30, "gpu_memory_bytes": [80 << 30]}).start()
    try:
        code, body = health(fast_beats)
        assert code == 200 and body["workers"] == "ok", body
        assert [(w["node"], w["alive"]) for w in body["seen_workers"]] == [("workbench-1@box", True)]
        # what the fit check compares a job's estimate with is visible to the operator
        assert body["seen_workers"][0]["capacity"] == {"ram_bytes": 8 << 30, "gpu_memory_bytes": [80 << 30]}
    finally:
        worker._stop.set()  # stops beating without removing its record: what kill -9 leaves behind
        worker._thread.join()
    time.sleep(1.3)
    code, body = health(fast_beats)
    assert code == 503 and body["status"] == "error", body
    assert body["workers"].startswith("down: no worker of queue") and "workbench-1@box" in body["workers"]
    assert body["seen_workers"][0]["alive"] is False

    replacement = presence(fast_beats, "workbench-2@box").start()
    try:
        code, body = health(fast_beats)
        assert code == 200, body
        assert [w["node"] for w in body["seen_workers"] if w["alive"]] == ["workbench-2@box"]
    finally:
        replacement.stop()  # a clean stop removes its record
    code, body = health(fast_beats)
    assert "workbench-2@box" not in [w["node"] for w in body["seen_workers"]]


def test_an_unreachable_broker_is_reported(fast_beats, monkeypatch):
    monkeypatch.setenv("WORKBENCH_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    code, body = health(get_settings())
    assert code == 503 and body["database"] == "ok", body
    assert "onnect" in body["broker"] and body["workers"].startswith("down: unknown")


class Sleeper:
    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        self.pid = self.process.pid

    def poll(self):
        return self.process.poll()

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def test_a_supervised_process_that_is_down_makes_health_503(fast_beats):
    supervisor = Supervisor(poll_interval_s=0.05)
    sleeper = supervisor.add("redis", Sleeper)
    supervisor.start()
    try:
        with health_client(fast_beats, supervisor) as client:
            code, body = ask(client)
            assert code == 200 and body["processes"] == {"redis": f"running (pid {sleeper.pid})"}, body
            os.kill(sleeper.pid, signal.SIGKILL)
            sleeper.process.wait()
            code, body = ask(client)  # within its 1 s back-off
            assert code == 503 and body["processes"]["redis"].startswith("down: "), body
            time.sleep(1.5)
            code, body = ask(client)  # restarted
            assert code == 200 and body["processes"]["redis"].endswith("1 restart)"), body
    finally:
        supervisor.stop()


def test_serve_expects_its_own_worker(fast_beats):
    supervisor = Supervisor(poll_interval_s=0.05)
    supervisor.add("worker", Sleeper)  # running, but no presence beat yet (still starting up)
    try:
        with health_client(fast_beats, supervisor) as client:
            code, body = ask(client)
            assert code == 503 and body["workers"].startswith("down: the local worker has not beaten yet"), body
            worker = presence(fast_beats, "workbench-3@box").start()
            try:
                assert ask(client)[0] == 200
            finally:
                worker.stop()
    finally:
        supervisor.stop()
