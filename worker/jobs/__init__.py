"""The job layer: what a job is and how it moves, without the machinery that runs it.

`web/` and the CLI call this layer; the worker's runtime (`worker.runtime`) calls it too. Importing it imports
no Celery and no torch (tests/worker/test_layers.py).

  lifecycle         the state machine: submit / validate / enqueue / claim / cancel / resume / finish
  spec              what a job kind declares (`JobKindSpec`), and the settings several kinds share
  params            a job's params checked against its kind's declared settings
  references        the dataset and model rows a job's params name
  fit               the submit-time checks of memory and schedule, shared by the kinds
  context           what a handler gets (`JobContext`) and returns (`Outcome`); the prepared-data cache
  training          the one path every training kind takes (TrainConfig, resume, Model row)
  preference_pairs  the pairs a reward or DPO job trains on, snapshotted to its run
  progress_writer   metrics, logs and progress written from a background thread
  presence          which workers are alive and what each has (records in the broker's Redis)
  messages          "a job is waiting" messages and the Celery settings every process shares
"""
