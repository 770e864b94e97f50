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

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0
JOB_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid`, from /proc (children of every thread, recursively)."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for children_file in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = {int(c) for c in children_file.read_text().split()}
            except (FileNotFoundError, ProcessLookupError):
                continue
            pending.extend(children - found)
            found |= children
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class Server:
    """A `workbench serve` subprocess whose output is collected by a thread (so its pipe never fills)."""

    def __init__(self, data_dir: Path, *extra_args: str, env_overrides: dict[str, str] | None = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(env_overrides or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir),
             *extra_args],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def health(self) -> tuple[int, dict]:
        """(status code, body) of /api/health as the admin sees it (once serve printed the password: each
        part's state); (0, {}) while nothing answers."""
        password = next((line.split(": ", 1)[1].strip() for line in self.output.splitlines()
                         if line.startswith("admin password: ")), None)
        try:
            answer = httpx.get(f"{self.base_url}/api/health", timeout=5,
                               auth=("admin", password) if password else None)
        except httpx.HTTPError:
            return 0, {}
        return answer.status_code, answer.json()

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> dict:
        """Wait for /api/health to answer 200 (every part up); returns its body."""
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{self.output}")
            code, body = self.health()
            if code == 200:
                return body
            time.sleep(0.25)
        pytest.fail(f"serve was not healthy within {timeout} s (last health {body}):\n{self.output[-5000:]}")

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        finally:
            self._reader.join(timeout=5)

    def kill(self) -> None:
        if self.process.poll() is None:
            for pid in descendants(self.process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.kill()
            self.process.wait()


def admin_password(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("admin password: "):
            return line.split(": ", 1)[1].strip()
    pytest.fail(f"no admin password printed:\n{output}")


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
