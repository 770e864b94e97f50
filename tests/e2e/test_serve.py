"""`workbench serve` as people run it: a real process tree, started and stopped by signals.

The process is started with `python -m web.cli serve` (the same `main` as the `workbench`
console script) on a free port in a temporary data directory, with the embedded Redis and one
local worker. The test waits for /api/health, logs in with the printed admin password, runs a
small prepare job through the whole stack (API → Redis → worker subprocess → database), then sends
SIGTERM and checks that every process the server started (worker, its pool, redis-server) is gone.
A second start on the same data directory (no worker, stopped with Ctrl-C/SIGINT) prints no new
admin password.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import JOB_TIMEOUT_S, Server, admin_password, alive, command_line, descendants



@pytest.mark.parametrize("argv, expected", [
    ([], ["serve", "worker", "prepare", "pretrain", "generate", "import-gpt2", "bench"]),
    (["serve"], ["--host", "--port", "--data-dir", "--no-worker"]),
    (["worker"], ["--queues", "--concurrency", "--pool"]),
])
def test_workbench_help(capsys: pytest.CaptureFixture, argv: list[str], expected: list[str]):
    from web.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for word in expected:
        assert word in help_text


@pytest.mark.subprocess
@pytest.mark.slow
def test_serve_runs_a_job_and_leaves_no_process_behind(tmp_path: Path):
    data_dir = tmp_path / "data"
    server = Server(data_dir)
    try:
        health = server.wait_healthy()
        # Every part is reported: the local worker has beaten, serve supervises it and Redis.
        assert (health["database"], health["broker"], health["workers"]) == ("ok", "ok", "ok"), health
        assert set(health["processes"]) == {"redis", "worker"}, health
        assert all(state.startswith("running") for state in health["processes"].values()), health
        assert [w["alive"] for w in health["seen_workers"]] == [True], health
        auth = ("admin", admin_password(server.output))
        children = descendants(server.process.pid)
        commands = {pid: command_line(pid) for pid in children}
        assert any("redis-server" in c for c in commands.values()), commands
        assert any("worker.runtime.main" in c for c in commands.values()), commands

        with httpx.Client(base_url=server.base_url, auth=auth, timeout=30) as client:
            corpus = "\n\n".join(f"Document number {i} says something different about tokens." for i in range(40))
            dataset = client.post("/api/datasets", files={"file": ("docs.txt", corpus.encode())},
                                  data={"name": "docs", "kind": "text"})
            assert dataset.status_code == 201, dataset.text
            job = client.post("/api/jobs", json={"kind": "prepare",
                                                 "params": {"dataset_id": dataset.json()["id"], "tokenizer": "gpt2"}})
            assert job.status_code == 201, job.text
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while True:
                detail = client.get(f"/api/jobs/{job.json()['id']}").json()
                if detail["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            logs = client.get(f"/api/jobs/{job.json()['id']}/logs").json()
            assert detail["status"] == "succeeded", (detail, logs, server.output[-3000:])
            assert detail["worker_host"]

        children = descendants(server.process.pid)  # the worker may have forked since
        assert server.stop(signal.SIGTERM) == 0, server.output[-3000:]
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {pid: command_line(pid) for pid in children if alive(pid)}
        assert not left, f"processes left behind: {left}"
    finally:
        server.kill()

    # Second start on the same data: the admin exists, so no password is printed; no worker either.
    server = Server(data_dir, "--no-worker")
    try:
        server.wait_healthy()
        children = descendants(server.process.pid)
        assert not any("worker.runtime.main" in command_line(pid) for pid in children)
        assert server.stop(signal.SIGINT) == 0, server.output[-3000:]
        assert "admin password" not in server.output
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if alive(pid)]
    finally:
        server.kill()
