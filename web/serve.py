"""`workbench serve`: the whole platform on one machine with one command.

In order: settings and data directory → database migrations → first admin account (a generated
password is printed once) → broker (an embedded redis-server unless WORKBENCH_BROKER_URL is set)
→ one local worker subprocess → re-send queued jobs the broker may have lost → the reaper thread
(requeues jobs whose heartbeat stopped) → uvicorn serving `web.app.create_app()`.

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
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

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
    """`python -m worker.main` with our environment, in its own process group.

    Its own group (new session) means a Ctrl-C in the terminal reaches only us; we then stop the
    worker deliberately, after uvicorn, and can kill its pool children with one killpg.
    """
    return subprocess.Popen([sys.executable, "-m", "worker.main"], env=env, start_new_session=True,
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
    redis = None
    worker: subprocess.Popen | None = None
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
            from worker.broker import start_embedded_redis

            redis = start_embedded_redis(settings.data_dir)
            os.environ["WORKBENCH_BROKER_URL"] = redis.url  # for the worker and for our own enqueues
            settings = get_settings()
            log.info("embedded Redis broker at %s (pid %s)", redis.url, redis.pid)

        if not no_worker:
            worker = start_worker_process(dict(os.environ))
            log.info("local worker started (pid %s)", worker.pid)

        from worker.jobs import requeue_orphans
        from worker.reaper import start_reaper_thread

        requeued = requeue_orphans()
        if requeued:
            log.info("re-sent %s queued job(s) to the broker", requeued if isinstance(requeued, int) else len(requeued))
        reaper = start_reaper_thread(settings)

        from web.app import create_app

        app = create_app(settings)
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
        if worker is not None:
            stop_worker_process(worker)
            log.info("worker stopped")
        if redis is not None:
            redis.stop()
            log.info("embedded Redis stopped")
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
