"""The worker: the job layer, one folder per job kind, and the runtime that executes claimed jobs.

  jobs/     the job layer (what `web/` and the CLI call): lifecycle, declarations, params, checks, context,
            the one training path, sending a job's message. Imports no Celery runtime and no torch.
  kinds/    one folder per job kind (its declaration, estimate, handler, report-card rows); `KINDS` in
            `kinds/__init__.py` is the registry, one line per kind.
  runtime/  what runs a claimed job: the Celery app and task, the runner, heartbeats, the reaper, the
            embedded broker, the supervisor of `workbench serve`'s children, `python -m worker.runtime.main`.

The database is the source of truth for job state; a Celery message carries only a job id.
"""
