"""End to end: a real worker process (`python -m worker.runtime.main`) over a real Redis and a real database.

Each test starts worker subprocesses with WORKBENCH_* variables pointing at the test's data
directory, database (SQLite and PostgreSQL) and broker, either an embedded redis-server
(`worker.runtime.broker`, what `workbench serve` uses on one machine) or the Redis on 127.0.0.1:6379 with
a queue of the test's own. Jobs are tiny (the "tiny" preset, block 32, batch 4) so the whole file
runs in a few minutes on two CPU cores. Worker processes are always killed at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest
from sqlalchemy import select

from db.models import Dataset, DatasetKind, JobStatus, Metric, Model, ModelKind
from tests.support.worker_processes import (TINY_RUN, checkpoint_step, job_log, job_snapshot, loss_steps, wait_for,
                                            wait_for_status)
from worker.jobs import lifecycle as jobs

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


# ----------------------------------------------------------------------------- fixtures


# ----------------------------------------------------------------------------- helpers


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_pretrain_job_runs_to_a_loadable_model(broker, workbench_env, session, dataset, start_worker):
    worker = start_worker()
    started = time.monotonic()
    job = jobs.submit_job(session, "pretrain", {"dataset_id": dataset.id, "max_steps": 30, "log_every": 5,
                                                "eval_every": 15, "name": "tiny base", **TINY_RUN})
    done = wait_for_status(session, job.id, {JobStatus.succeeded, JobStatus.failed}, 240, [worker])
    elapsed = time.monotonic() - started
    assert done.status == JobStatus.succeeded, done.error
    print(f"pretrain job (30 steps) submitted -> succeeded in {elapsed:.1f}s")
    assert done.progress == 1.0 and done.attempts == 1 and done.error is None
    assert done.finished_at is not None and done.started_at is not None

    # Metrics: one row per numeric name per logged step, evaluations included.
    session.rollback()
    rows = session.execute(select(Metric.name, Metric.step).where(Metric.job_id == job.id)).all()
    names = {name for name, _ in rows}
    assert {"loss", "lr", "tokens_per_s", "val_loss", "val_bpb"} <= names
    assert loss_steps(session, job.id) == [1, 5, 10, 15, 20, 25, 30]
    assert sorted(step for name, step in rows if name == "val_loss") == [15, 30]
    assert max(Counter(rows).values()) == 1  # no (name, step) twice

    model = session.scalars(select(Model).where(Model.job_id == job.id)).one()
    assert done.output_model_id == model.id
    assert (model.name, model.kind, model.tokenizer, model.path) == ("tiny base", ModelKind.base, "gpt2",
                                                                     f"runs/{job.id}")
    assert model.config["n_layer"] == 2 and model.config["block_size"] == 32

    # The model directory loads and runs.
    import torch

    from llm.checkpoint import load_model

    loaded, tokenizer = load_model(workbench_env.data_dir / model.path, "cpu", data_dir=workbench_env.data_dir)
    ids = torch.tensor([tokenizer.encode("the model reads")])
    logits, _ = loaded(ids)
    assert logits.shape[-1] == loaded.config.vocab_size

    # The prepared data is cached per dataset and tokenizer for the next run.
    assert (workbench_env.data_dir / f"datasets/{dataset.id}/prepared/gpt2/stats.json").is_file()
    lines = job_log(session, job.id)
    assert any(line.startswith("succeeded: finished at step 30") for line in lines)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broker", ["embedded"], indirect=True)
def test_jobs_run_in_priority_order_and_failures_are_readable(broker, workbench_env, session, dataset,
                                                               start_worker, tmp_path):
    # A dataset whose file holds no document: preparing it fails inside llm with a CorpusError.
    empty = Dataset(name="empty", kind=DatasetKind.text, format="txt", path="datasets/empty/corpus.txt",
                    original_filename="empty.txt", size_bytes=3, stats={})
    (workbench_env.data_dir / "datasets/empty").mkdir(parents=True)
    (workbench_env.data_dir / empty.path).write_text("\n\n\n")
    session.add(empty)
    session.commit()

    # Submitted before any worker runs, lowest priority first: messages arrive in that order,
    # yet the jobs must run best-first.
    low = jobs.submit_job(session, "train_tokenizer", {"dataset_id": dataset.id, "vocab_size": 300,
                                                       "name": "bpe-300"}, priority=-1)
    broken = jobs.submit_job(session, "prepare", {"dataset_id": empty.id}, priority=0)
    high = jobs.submit_job(session, "prepare", {"dataset_id": dataset.id, "val_fraction": 0.1}, priority=5)
    worker = start_worker()
    for job in (low, broken, high):
        wait_for_status(session, job.id, {JobStatus.succeeded, JobStatus.failed}, 180, [worker])
    low, broken, high = (job_snapshot(session, job.id) for job in (low, broken, high))
    assert high.started_at < broken.started_at < low.started_at
    assert (high.status, low.status, broken.status) == (JobStatus.succeeded, JobStatus.succeeded, JobStatus.failed)
    assert (workbench_env.tokenizers_dir / "bpe-300" / "tokenizer.json").is_file()
    stats = json.loads((workbench_env.data_dir / f"datasets/{dataset.id}/prepared/gpt2/stats.json").read_text())
    assert stats["val_fraction"] == 0.1

    # The error is a sentence for people; the traceback is in the job log, not in `error`.
    assert "no document" in broken.error.lower() and "Traceback" not in broken.error
    assert any("Traceback" in line for line in job_log(session, broken.id))
    assert any(line.startswith("stats {") for line in job_log(session, high.id))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broker", ["embedded"], indirect=True)
def test_cancel_stops_a_running_job_and_keeps_its_checkpoint(broker, workbench_env, session, dataset,
                                                             small_tokenizer, start_worker):
    worker = start_worker(WORKBENCH_HEARTBEAT_SECONDS="0.5", WORKBENCH_STALE_AFTER_SECONDS="30")
    job = jobs.submit_job(session, "pretrain", {"dataset_id": dataset.id, "max_steps": 5000, "log_every": 1,
                                                "checkpoint_every": 0, "eval_every": 0,
                                                **TINY_RUN, "tokenizer": small_tokenizer})
    wait_for(lambda: bool(loss_steps(session, job.id)), 180, "the first training step", session, job.id, [worker])
    cancel_sent = time.monotonic()
    assert jobs.request_cancel(session, job.id).cancel_requested
    done = wait_for_status(session, job.id, {JobStatus.cancelled, JobStatus.failed, JobStatus.succeeded},
                           60, [worker])
    print(f"cancel took effect in {time.monotonic() - cancel_sent:.1f}s")
    assert done.status == JobStatus.cancelled, done.error
    assert done.finished_at is not None
    stopped_at = checkpoint_step(workbench_env.data_dir / done.run_dir)
    assert stopped_at is not None and 1 <= stopped_at < 5000
    assert loss_steps(session, job.id)[-1] == stopped_at
    assert session.scalars(select(Model).where(Model.job_id == job.id)).first() is None
    assert any(line.startswith("cancelled: stopped at step") for line in job_log(session, job.id))
    assert worker.process.poll() is None  # the worker carries on, ready for the next job


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("broker", ["redis6379"], indirect=True)
def test_a_job_of_a_killed_worker_resumes_from_its_checkpoint(broker, workbench_env, session, dataset,
                                                              small_tokenizer, start_worker):
    fast_reaping = {"WORKBENCH_HEARTBEAT_SECONDS": "1", "WORKBENCH_STALE_AFTER_SECONDS": "3"}
    first = start_worker(**fast_reaping)
    max_steps = 150
    job = jobs.submit_job(session, "pretrain", {"dataset_id": dataset.id, "max_steps": max_steps, "log_every": 1,
                                                "checkpoint_every": 10, "eval_every": 0,
                                                **TINY_RUN, "tokenizer": small_tokenizer})
    run_dir = workbench_env.data_dir / f"runs/{job.id}"
    wait_for(lambda: (checkpoint_step(run_dir) or 0) >= 10, 180, "a checkpoint", session, job.id, [first])
    first.kill_hard()
    killed = time.monotonic()
    stale = job_snapshot(session, job.id)
    assert stale.status == JobStatus.running  # nobody told the database: only the heartbeat stops
    checkpoint_at_kill = checkpoint_step(run_dir)
    assert checkpoint_at_kill < max_steps, "the run finished before the kill; raise max_steps"

    second = start_worker(**fast_reaping)
    wait_for(lambda: job_snapshot(session, job.id).attempts == 2, 60, "the reaper to requeue the job",
             session, job.id, [second])
    print(f"killed worker's job claimed again {time.monotonic() - killed:.1f}s after the kill")
    done = wait_for_status(session, job.id, {JobStatus.succeeded, JobStatus.failed}, 240, [second])
    assert done.status == JobStatus.succeeded, done.error
    assert done.attempts == 2

    lines = job_log(session, job.id)
    assert any(line.startswith("worker lost:") for line in lines)
    resumed = [line for line in lines if line.startswith("resuming from the checkpoint at step")]
    assert resumed, lines
    resumed_from = int(resumed[0].rsplit(" ", 1)[1])
    assert resumed_from == checkpoint_at_kill and resumed_from % 10 == 0
    # Exactly one loss record per step: the killed attempt's records past the checkpoint were
    # replaced by the resumed attempt's, and step 1 was not trained twice.
    assert loss_steps(session, job.id) == list(range(1, max_steps + 1))
    assert len(session.scalars(select(Model).where(Model.job_id == job.id)).all()) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broker", ["embedded"], indirect=True)
def test_a_warm_shutdown_requeues_the_running_job_with_a_checkpoint(broker, workbench_env, session, dataset,
                                                                    small_tokenizer, start_worker):
    first = start_worker()
    max_steps = 200
    job = jobs.submit_job(session, "pretrain", {"dataset_id": dataset.id, "max_steps": max_steps, "log_every": 1,
                                                "checkpoint_every": 0, "eval_every": 0,
                                                **TINY_RUN, "tokenizer": small_tokenizer})
    wait_for(lambda: bool(loss_steps(session, job.id)), 180, "the first training step", session, job.id, [first])
    os.kill(first.pid, signal.SIGTERM)  # what `docker stop` or systemd sends on a restart
    first.process.wait(timeout=60)
    stopped = job_snapshot(session, job.id)
    assert stopped.status == JobStatus.queued, stopped.error
    stopped_at = checkpoint_step(workbench_env.data_dir / stopped.run_dir)
    assert stopped_at is not None and stopped_at < max_steps
    assert any("the worker is shutting down, so the job was requeued" in line for line in job_log(session, job.id))

    second = start_worker()
    done = wait_for_status(session, job.id, {JobStatus.succeeded, JobStatus.failed}, 240, [second])
    assert done.status == JobStatus.succeeded, done.error
    assert done.attempts == 2
    assert f"resuming from the checkpoint at step {stopped_at}" in job_log(session, job.id)
    assert loss_steps(session, job.id) == list(range(1, max_steps + 1))
