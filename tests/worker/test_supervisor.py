"""The supervisor of `workbench serve` on real child processes: restart, back-off, reaping, stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worker.runtime import supervisor as supervision
from worker.runtime.supervisor import Supervisor, describe_exit


class Sleeper:
    """A real child process that sleeps until stopped."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        self.pid = self.process.pid

    def poll(self):
        return self.process.poll()

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def is_zombie_or_gone(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def wait_for(condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def test_describe_exit():
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exited with 3"


def test_a_killed_child_is_reaped_and_restarted_with_a_growing_back_off(monkeypatch, caplog):
    monkeypatch.setattr(supervision, "FIRST_BACKOFF_S", 0.3)
    monkeypatch.setattr(supervision, "MAX_BACKOFF_S", 1.0)
    exits = []
    watcher = Supervisor(poll_interval_s=0.05)
    first = watcher.add("sleeper", Sleeper, on_exit=exits.append)
    watcher.start()
    try:
        assert watcher.states() == {"sleeper": f"running (pid {first.pid})"}
        pids, delays = [first.pid], []
        for _ in range(4):
            os.kill(pids[-1], signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: watcher.states()["sleeper"].startswith("down: killed by SIGKILL; restarting in"))
            new = wait_for(lambda: (h := watcher.handle("sleeper")) is not None and h.pid != pids[-1] and h)
            delays.append(time.monotonic() - killed)
            assert is_zombie_or_gone(pids[-1]) == "gone"  # reaped, not a zombie
            pids.append(new.pid)
        # 0.3, 0.6, 1.0 (the cap), 1.0: each measured delay at least its back-off, and growing.
        for delay, backoff in zip(delays, (0.3, 0.6, 1.0, 1.0)):
            assert backoff <= delay < backoff + 1.0, delays
        assert watcher.states() == {"sleeper": f"running (pid {pids[-1]}, 4 restarts)"}
        assert [handle.pid for handle in exits] == pids[:-1]  # on_exit saw each dead one
        assert "sleeper (pid %s) killed by SIGKILL; restarting it in" % pids[0] in caplog.text
    finally:
        watcher.stop()
    assert is_zombie_or_gone(pids[-1]) == "gone"
    assert watcher.states() == {"sleeper": "down: killed by SIGKILL, 4 restarts"}


def test_a_back_off_starts_over_after_a_stable_run(monkeypatch):
    monkeypatch.setattr(supervision, "FIRST_BACKOFF_S", 0.2)
    monkeypatch.setattr(supervision, "STABLE_AFTER_S", 0.5)
    watcher = Supervisor(poll_interval_s=0.05)
    handle = watcher.add("sleeper", Sleeper)
    watcher.start()
    try:
        for _ in range(3):  # quick deaths: 0.2, 0.4, 0.8
            os.kill(handle.pid, signal.SIGKILL)
            handle = wait_for(lambda: (h := watcher.handle("sleeper")) is not None and h.pid != handle.pid and h)
        assert watcher.parts["sleeper"].backoff_s == pytest.approx(1.6)
        time.sleep(0.7)  # a stable run
        wait_for(lambda: watcher.parts["sleeper"].backoff_s == pytest.approx(0.2))
    finally:
        watcher.stop()


def test_a_part_that_cannot_start_is_tried_again(monkeypatch):
    monkeypatch.setattr(supervision, "FIRST_BACKOFF_S", 0.1)
    attempts = []

    def start():
        attempts.append(time.monotonic())
        if 2 <= len(attempts) <= 3:
            raise RuntimeError("port taken")
        return Sleeper()

    started = []
    watcher = Supervisor(poll_interval_s=0.05)
    first = watcher.add("flaky", start, on_start=started.append)
    watcher.start()
    try:
        os.kill(first.pid, signal.SIGKILL)
        wait_for(lambda: watcher.states()["flaky"].startswith("down: could not start: port taken"))
        later = wait_for(lambda: (h := watcher.handle("flaky")) is not None and h)
        assert len(attempts) == 4 and started == [later]
        assert watcher.states()["flaky"] == f"running (pid {later.pid}, 1 restart)"
    finally:
        watcher.stop()
