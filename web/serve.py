"""`workbench serve`: the whole platform on one machine with one command.

In order: settings and data directory → database migrations → first admin account (a generated
password is printed once) → broker (an embedded redis-server unless WORKBENCH_BROKER_URL is set)
→ one local worker subprocess → re-send queued jobs the broker may have lost → the reaper thread
(requeues jobs whose heartbeat stopped, re-sends lost messages) → uvicorn serving
`web.app.create_app()`.

The embedded Redis and the worker are supervised (`worker.runtime.supervisor`): one that exits or is killed is
logged, reaped and started again with back-off (Redis on the same port). When the worker dies its
running jobs are requeued at once (they resume from their checkpoints on the new worker); when
Redis comes back every queued job is sent again, since it lost their messages. /api/health shows
both (`app.state.supervisor`).

Shutdown (Ctrl-C or SIGTERM): uvicorn drains its requests, then the worker gets SIGTERM and some
seconds to stop (a running training job checkpoints on cancellation or is resumed from its last
checkpoint later: late acks + requeue_orphans), then its whole process group is killed, and the
embedded Redis is stopped. Every child also gets PR_SET_PDEATHSIG on Linux, so even `kill -9`
of this process leaves no orphan behind.

The worker is a separate process, not a thread, because the design keeps training out of the
web process: a training step holding the GIL would make every page slow.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from llm.threads import JOB_PROCESSES_ENV

log = logging.getLogger("workbench.serve")

WORKER_STOP_SECONDS = 15.0  # SIGTERM → wait this long for a warm shutdown → kill the group
_PR_SET_PDEATHSIG = 1


class _Terminated(BaseException):
    """Raised by our SIGTERM handler so cleanup runs in `finally` blocks (like KeyboardInterrupt)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(signum)


def _die_with_parent_preexec():
    """preexec_fn for children: get SIGTERM if this process dies without cleaning up (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up in the parent, not after fork
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return preexec


def start_worker_process(env: dict[str, str]) -> subprocess.Popen:
    """`python -m worker.runtime.main` with our environment, in its own process group.

    Its own group (new session) means a Ctrl-C in the terminal reaches only us; we then stop the
    worker deliberately, after uvicorn, and can kill its pool children with one killpg.
    """
    return subprocess.Popen([sys.executable, "-m", "worker.runtime.main"], env=env, start_new_session=True,
                            preexec_fn=_die_with_parent_preexec())


def stop_worker_process(process: subprocess.Popen, timeout: float = WORKER_STOP_SECONDS) -> None:
    """SIGTERM (Celery's warm shutdown), wait, then SIGKILL the whole group; safe to call twice."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("worker (pid %s) did not stop within %.0f s; killing it", process.pid, timeout)
    # The pool children share the group; whatever is left of it goes now.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def kernel_oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (/proc/vmstat; None elsewhere)."""
    try:
        with open("/proc/vmstat") as vmstat:
            for line in vmstat:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class LocalWorker:
    """The supervised handle of the local worker subprocess."""

    def __init__(self, env: dict[str, str]):
        self.oom_kills_at_start = kernel_oom_kills()
        self.process = start_worker_process(env)
        self.pid = self.process.pid

    def killed_for_memory(self) -> bool:
        """Whether the worker died of SIGKILL while the kernel's OOM killer struck: with the solo pool the
        job runs in the worker itself, so the OOM killer takes the worker, and resuming would only repeat it."""
        now = kernel_oom_kills()
        return (self.process.returncode == -signal.SIGKILL and now is not None
                and self.oom_kills_at_start is not None and now > self.oom_kills_at_start)

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        stop_worker_process(self.process)


def take_back_jobs_of_dead_worker(worker: LocalWorker) -> None:
    """The worker exited: end what is left of its process group (pool children still running a job
    must not race the restarted worker), then requeue its running jobs now, without waiting for
    their heartbeats to go stale."""
    from db.session import session_scope
    from worker.runtime.reaper import reap_jobs_of_dead_worker

    worker.stop()
    node_name = f"workbench-{worker.pid}@{socket.gethostname()}"  # worker.runtime.main.default_node_name
    with session_scope() as session:
        if worker.killed_for_memory():
            from worker.runtime.reaper import fail_killed_job, killed_reason
            from worker.runtime.runner import job_worker_host

            failed = fail_killed_job(session, job_worker_host(node_name, worker.pid),
                                     killed_reason("the kernel's OOM killer ended the worker running it"))
            if failed:
                log.warning("job(s) %s failed: the worker running them was killed for memory", failed)
        requeued = reap_jobs_of_dead_worker(session, node_name)
    if requeued:
        log.info("requeued job(s) %s of the worker that exited (pid %s)", requeued, worker.pid)


def resend_queued_jobs(reason: str) -> None:
    from worker.jobs.lifecycle import requeue_orphans

    sent = requeue_orphans(reason=reason)
    if sent:
        log.info("re-sent %s queued job(s) to the broker (%s)", len(sent), reason)


def serve(host: str = "127.0.0.1", port: int = 7860, data_dir: str | os.PathLike | None = None,
          no_worker: bool = False) -> None:
    """Run the platform until Ctrl-C or SIGTERM; stop everything it started before returning."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per plugin at INFO: noise at every start
    if data_dir is not None:
        # Set before anything reads the settings; children inherit it.
        os.environ["WORKBENCH_DATA_DIR"] = str(Path(data_dir).expanduser().resolve())

    # Our handler turns SIGTERM into an exception, so the finally below runs. uvicorn installs its
    # own handlers while serving and re-raises the captured signal afterwards, which lands here.
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
    from worker.runtime.supervisor import Supervisor

    supervisor = Supervisor()
    reaper = None
    try:
        from db.migrate import upgrade
        from db.session import session_scope
        from db.settings import get_settings
        from db.users import ensure_admin

        settings = get_settings()
        settings.ensure_directories()
        upgrade()
        with session_scope() as session:
            generated = ensure_admin(session, settings.admin_password)
        if generated:
            print(f"admin password: {generated}", flush=True)
            print("  (shown once; log in as 'admin' and keep it somewhere safe)", flush=True)

        if settings.uses_embedded_broker:
            from worker.runtime.broker import start_embedded_redis

            data_dir_now, first_port = settings.data_dir, []

            def start_redis():
                # Restarts reuse the first port: the worker and this process keep their broker URL.
                started = start_embedded_redis(data_dir_now, port=first_port[0] if first_port else None)
                first_port[:] = [started.port]
                return started

            redis = supervisor.add("redis", start_redis, on_start=lambda _: resend_queued_jobs(
                "the embedded Redis was restarted and lost its messages"))
            os.environ["WORKBENCH_BROKER_URL"] = redis.url  # for the worker and for our own enqueues
            settings = get_settings()
            log.info("embedded Redis broker at %s (pid %s)", redis.url, redis.pid)

        if not no_worker:
            # The worker's one job slot and this process's chat both run on this machine: the job takes half the
            # cores (llm/threads.py), so a chat request beside a training run does not stall it.
            worker_env = {**os.environ, JOB_PROCESSES_ENV: os.environ.get(JOB_PROCESSES_ENV, "2")}
            worker = supervisor.add("worker", lambda: LocalWorker(worker_env),
                                    on_exit=take_back_jobs_of_dead_worker)
            log.info("local worker started (pid %s)", worker.pid)
        supervisor.start()

        from worker.runtime.reaper import start_reaper_thread

        resend_queued_jobs("the app started")
        reaper = start_reaper_thread(settings)

        from web.app import create_app

        app = create_app(settings)
        app.state.supervisor = supervisor  # /api/health reports what it supervises
        print(f"LLM Workbench on http://{host}:{port}  (API docs: /docs; data: {settings.data_dir})", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info",
                                               # The app is built already; one process, one engine.
                                               workers=1, lifespan="on"))
        server.run()
    except (KeyboardInterrupt, _Terminated):
        log.info("stopping")
    finally:
        # A second SIGTERM during cleanup must not cut it short (children would survive until
        # PDEATHSIG); Ctrl-C still can, for someone in a hurry.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_reaper(reaper)
        supervisor.stop()  # the worker (warm shutdown, then its group is killed), then Redis
        signal.signal(signal.SIGTERM, previous_sigterm)


def _stop_reaper(reaper) -> None:
    """Stop the reaper thread if its object offers a way; a daemon thread dies with us anyway."""
    if reaper is None:
        return
    for method in ("stop", "set"):
        stop = getattr(reaper, method, None)
        if callable(stop):
            stop()
            break
    if isinstance(reaper, threading.Thread):
        reaper.join(timeout=5)
