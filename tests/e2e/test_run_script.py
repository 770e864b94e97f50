"""`./scripts/run.sh` as people run it: it says what it is doing at each step, prints one clear block
with the address and the admin password once the app answers, and Ctrl-C stops everything it started.

The script runs for real (setup.sh is idempotent: with .venv installed it only re-checks torch and
re-installs the app in editable mode) on a free port and a temporary data directory; Ctrl-C is
simulated as a terminal does it, SIGINT to the script's whole process group.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.processes import alive, descendants, free_port

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0


@contextmanager
def sigint_at_its_default_action_in_children():
    """Start children the way a terminal does, with Ctrl-C's default action.

    A test run started in the background by a non-interactive shell inherits SIGINT *ignored*, its
    children inherit that, and bash cannot trap a signal that was ignored when it started: run.sh's
    Ctrl-C trap would then silently do nothing. Exec resets a signal that has a handler to its default
    action, so a handler in this process gives the script a default SIGINT whatever this run inherited.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_run_script_says_each_step_and_prints_the_address_and_admin_password(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    with sigint_at_its_default_action_in_children():
        process = subprocess.Popen(["bash", str(REPO_ROOT / "scripts" / "run.sh"), "--port", str(port),
                                    "--data-dir", str(tmp_path / "data")],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    started: set[int] = set()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not any("LLM Workbench is ready" in line for line in lines):
            assert process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            started |= descendants(process.pid)
            time.sleep(0.5)
        time.sleep(0.5)  # the rest of the block
        started |= descendants(process.pid)
        output = "".join(lines)

        steps = [line for line in lines if line.startswith("==> ")]
        assert "setting up the Python environment" in steps[0], steps
        assert any("installing the app" in step for step in steps), steps
        assert "starting LLM Workbench" in steps[-1] and "Redis and a local worker" in steps[-1], steps
        # The block comes after the server's own output, and the address in it answers.
        url = re.search(r"LLM Workbench is ready: (http://\S+)", output).group(1)
        assert url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/api/health", timeout=10).status_code == 200
        password = re.search(r"Log in as: admin\s+password: (\S+)", output).group(1)
        assert f"admin password: {password}" in output  # the one the server created
        assert httpx.get(f"{url}/api/jobs", auth=("admin", password), timeout=10).status_code == 200
        assert output.index("LLM Workbench is ready") > output.index("LLM Workbench on http")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal
        code = process.wait(timeout=STOP_TIMEOUT_S)
        reader.join(timeout=10)
    assert code == 0, "".join(lines)
    assert "==> stopping LLM Workbench" in "".join(lines)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in started if alive(pid)], "processes left running after Ctrl-C"
