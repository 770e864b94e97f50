"""The Celery application, configured from the workbench settings (its one task is in `worker.runtime.tasks`).

The database is the source of truth for job state; a message carries only a job id and means
"a job is waiting: a worker slot should claim one". On arrival the worker claims the *best*
queued job (highest priority, then oldest; see `worker.jobs.lifecycle.claim_next_job`), which is not
necessarily the message's own id, so jobs run in priority-then-submission order whatever order
the broker delivers messages in, and a message with no queued job left is a harmless no-op.

Its settings, the task's name and the queue are shared with the processes that only send
(`worker.jobs.messages`), declared there once.

The app is configured lazily: `app.add_defaults` receives a function that reads
`get_settings()` only when the configuration is first needed, so WORKBENCH_* variables set by
tests or by `workbench serve` before that moment are honoured. `configure(app, settings)` sets
it explicitly (the worker's start, or a test that points it at another broker) and drops
pooled broker connections so the new URL takes effect.
"""

from __future__ import annotations

import logging

from celery import Celery

from db.settings import get_settings
from worker.jobs.messages import celery_config

logger = logging.getLogger(__name__)

app = Celery("workbench", include=["worker.runtime.tasks"])  # the worker imports the task module at start
# Lazy: evaluated at the first read of app.conf, not at import.
app.add_defaults(lambda: celery_config(get_settings()))
