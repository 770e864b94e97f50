"""`workbench serve` as a real process tree for the serve, fault and run-script tests: ports, a process's
descendants and command line, and `Server` (start, wait until it answers, stop by signal)."""

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


REPO_ROOT = Path(__file__).resolve().parents[2]
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
