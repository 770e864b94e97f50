"""Sending "a job is waiting" messages, by task name: what the web process and the reaper call.

The message names the task (`RUN_JOB_TASK`) instead of importing it, so nothing that sends imports
the worker's job-running code (see worker/tasks.py).
"""

from __future__ import annotations

from worker.celery_app import RUN_JOB_TASK, app, ensure_configured, job_queue


def send_run_job(job_id: int) -> None:
    """Send one run_job message carrying `job_id`; raises when the broker is unreachable."""
    ensure_configured(app)
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=job_queue())
