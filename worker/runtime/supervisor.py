"""Keep the child processes of `workbench serve` running: restart with back-off, log, reap.

`Supervisor` is a thread that watches named parts (the local worker, the embedded Redis). Each part
is started by a function returning a handle with `pid`, `poll()` and `stop()`. Every
`POLL_INTERVAL_S` the thread polls each handle; `poll()` also reaps an exited child, so no zombie is
left. A part that exited is logged with its exit status, its `on_exit` hook runs (the worker's:
take back its jobs at once instead of waiting for their heartbeats to go stale), and it is started
again after a back-off of 1, 2, 4 ... `MAX_BACKOFF_S` seconds; the back-off starts over once a part
has stayed up `STABLE_AFTER_S`. A part whose start raises is retried on the same schedule. Its
`on_start` hook runs after every restart (Redis: re-send the queued jobs whose messages it lost).

`states()` is what /api/health shows: "running (pid N)" or why and when the next start comes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("workbench.serve")

POLL_INTERVAL_S = 0.5
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0


class ProcessHandle(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def stop(self) -> None: ...


def describe_exit(returncode: int) -> str:
    """`exited with 3` or `killed by SIGKILL` (Popen reports a signal as a negative code)."""
    import signal

    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with {returncode}"


@dataclass
class Part:
    """One supervised process and its restart bookkeeping."""

    name: str
    start: Callable[[], ProcessHandle]
    on_exit: Callable[[ProcessHandle], Any] | None = None
    on_start: Callable[[ProcessHandle], Any] | None = None
    handle: ProcessHandle | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 0.0  # set from FIRST_BACKOFF_S when added
    next_start_at: float | None = None
    last_exit: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Supervisor(threading.Thread):
    """Watch parts added with `add` (which starts them) until `stop()`, which stops them in reverse order."""

    def __init__(self, poll_interval_s: float = POLL_INTERVAL_S):
        super().__init__(name="workbench-supervisor", daemon=True)
        self.poll_interval_s = poll_interval_s
        self.parts: dict[str, Part] = {}
        self._stop_event = threading.Event()

    def add(self, name: str, start: Callable[[], ProcessHandle], *, on_exit=None, on_start=None) -> ProcessHandle:
        """Start a part now (raising if it cannot start: `serve` should not come up half-way)."""
        part = Part(name, start, on_exit=on_exit, on_start=on_start, backoff_s=FIRST_BACKOFF_S)
        part.handle = start()
        part.started_at = time.monotonic()
        self.parts[name] = part
        return part.handle

    def handle(self, name: str) -> ProcessHandle | None:
        return self.parts[name].handle

    def run(self) -> None:
        while not self._stop_event.wait(self.poll_interval_s):
            for part in list(self.parts.values()):
                try:
                    self.check(part)
                except Exception:  # a hook failed (the database is down?): keep supervising
                    log.exception("supervising %s failed", part.name)

    def check(self, part: Part) -> None:
        """One look at `part`: notice an exit, or start it again when its back-off is over."""
        now = time.monotonic()
        with part.lock:
            if part.handle is not None:
                returncode = part.handle.poll()  # reaps it: no zombie
                if returncode is None:
                    if part.backoff_s > FIRST_BACKOFF_S and now - part.started_at >= STABLE_AFTER_S:
                        part.backoff_s = FIRST_BACKOFF_S  # up for a stable minute: start over
                    return
                dead, part.handle = part.handle, None
                if now - part.started_at >= STABLE_AFTER_S:
                    part.backoff_s = FIRST_BACKOFF_S
                part.last_exit = describe_exit(returncode)
                part.next_start_at = now + part.backoff_s
                log.warning("%s (pid %s) %s; restarting it in %g s", part.name, dead.pid, part.last_exit,
                            part.backoff_s)
                part.backoff_s = min(MAX_BACKOFF_S, part.backoff_s * 2)
                hook = part.on_exit
            else:
                if part.next_start_at is None or now < part.next_start_at or self._stop_event.is_set():
                    return
                dead, hook = None, None
        if dead is not None:
            if hook is not None:
                hook(dead)
            return
        self._restart(part)

    def _restart(self, part: Part) -> None:
        try:
            handle = part.start()
        except Exception as error:
            with part.lock:
                part.last_exit = f"could not start: {error}"
                part.next_start_at = time.monotonic() + part.backoff_s
                log.warning("%s could not start (%s); next try in %g s", part.name, error, part.backoff_s)
                part.backoff_s = min(MAX_BACKOFF_S, part.backoff_s * 2)
            return
        with part.lock:
            part.handle, part.started_at, part.next_start_at = handle, time.monotonic(), None
            part.restarts += 1
        log.warning("%s restarted (pid %s, restart %s)", part.name, handle.pid, part.restarts)
        if part.on_start is not None:
            part.on_start(handle)

    def states(self) -> dict[str, str]:
        """Each part's state in words, for /api/health: "running (pid N)" when up."""
        now = time.monotonic()
        states = {}
        for name, part in self.parts.items():
            with part.lock:
                restarts = f", {part.restarts} restart{'s' if part.restarts != 1 else ''}" if part.restarts else ""
                if part.handle is not None and part.handle.poll() is None:
                    states[name] = f"running (pid {part.handle.pid}{restarts})"
                elif part.next_start_at is not None:
                    wait = max(0.0, part.next_start_at - now)
                    states[name] = f"down: {part.last_exit or 'exited'}; restarting in {wait:.0f} s{restarts}"
                else:
                    states[name] = f"down: {part.last_exit or 'exited'}{restarts}"
        return states

    def stop(self) -> None:
        """Stop watching, then stop the parts, last added first (the worker before its broker)."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
        for name, part in reversed(list(self.parts.items())):
            with part.lock:
                handle, part.handle, part.next_start_at = part.handle, None, None
            if handle is not None:
                handle.stop()
                log.info("%s stopped", name)
