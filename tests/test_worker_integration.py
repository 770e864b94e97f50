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
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Dataset, DatasetKind, Job, JobLog, JobStatus, Metric, Model, ModelKind
from worker.jobs import lifecycle as jobs

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_RUN = {"preset": "tiny", "tokenizer": "gpt2", "block_size": 32, "batch_size": 4, "lr": 3e-3,
            "warmup": 2, "eval_batches": 2, "device": "cpu"}


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(params=["embedded", "redis6379"])
def broker(request, workbench_env, tmp_path) -> Iterator[str]:
    """Point this process (and workers it starts) at a broker; yields the broker URL.

    "embedded": a private redis-server from worker.runtime.broker, stopped afterwards.
    "redis6379": the shared Redis on 127.0.0.1:6379 with a queue of this test's own (job_queue).
    """
    from worker.jobs.messages import configure
    from worker.runtime.celery_app import app

    if request.param == "embedded":
        from worker.runtime.broker import start_embedded_redis

        embedded = start_embedded_redis(tmp_path / "broker")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("WORKBENCH_BROKER_URL", embedded.url)
            configure(app)
            try:
                yield embedded.url
            finally:
                embedded.stop()
        configure(app)
    else:
        request.getfixturevalue("job_queue")  # sets WORKBENCH_BROKER_URL/WORKER_QUEUES, cleans up
        yield os.environ["WORKBENCH_BROKER_URL"]


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def kill_hard(self) -> None:
        """kill -9 the worker (and anything it started): no clean-up code runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def start_worker(tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """A function that starts `python -m worker.runtime.main` with the current WORKBENCH_* environment
    (plus overrides); every worker it started is stopped at teardown (SIGTERM, then SIGKILL)."""
    started: list[WorkerProcess] = []

    def start(**env_overrides: str) -> WorkerProcess:
        env = {**os.environ, **env_overrides,
               "PYTHONUNBUFFERED": "1",
               # Two shared cores: one torch thread per worker keeps the suite polite.
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log_path = tmp_path / f"worker-{len(started)}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker.runtime.main", "--loglevel", "info"],
                cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so teardown can end all of it
            )
        worker = WorkerProcess(process, log_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            os.killpg(worker.process.pid, signal.SIGTERM)
    for worker in started:
        try:
            worker.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait(timeout=10)


def write_corpus(path: Path, documents: int = 160, seed: int = 0) -> None:
    """A small English-like corpus of distinct documents separated by blank lines."""
    words = ("the model reads tokens and predicts the next one while data flows through "
             "layers of attention with a small learning rate on a quiet afternoon in spring "
             "because people write many different sentences about cats dogs rivers and code").split()
    rng = random.Random(seed)
    docs = [f"Document {n}. " + " ".join(rng.choice(words) for _ in range(rng.randint(40, 80))) + "."
            for n in range(documents)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(docs) + "\n")


@pytest.fixture
def dataset(workbench_env, session) -> Dataset:
    """A text dataset row with its corpus file stored under the data directory."""
    row = Dataset(name="tiny corpus", kind=DatasetKind.text, format="txt", path="pending",
                  original_filename="tiny.txt", size_bytes=0, stats={})
    session.add(row)
    session.flush()
    relative = f"datasets/{row.id}/corpus.txt"
    write_corpus(workbench_env.data_dir / relative)
    row.path = relative
    row.size_bytes = (workbench_env.data_dir / relative).stat().st_size
    session.commit()
    return row


@pytest.fixture
def small_tokenizer(workbench_env, dataset) -> str:
    """A 320-token BPE trained on the test corpus; with it a tiny-model step is ~10x cheaper than
    with GPT-2's 50k vocabulary (whose output layer dominates), so long runs stay short."""
    from llm.corpus import iter_documents
    from llm.tokenizer import train_tokenizer

    name = "tiny-bpe"
    train_tokenizer(iter_documents(workbench_env.data_dir / dataset.path), 320,
                    workbench_env.tokenizers_dir / name, name)
    return name


# ----------------------------------------------------------------------------- helpers

def job_snapshot(session: Session, job_id: int) -> Job:
    session.rollback()  # end any read transaction so we see the worker's commits
    return session.get(Job, job_id, populate_existing=True)


def job_log(session: Session, job_id: int) -> list[str]:
    session.rollback()
    return list(session.scalars(select(JobLog.line).where(JobLog.job_id == job_id).order_by(JobLog.id)))


def wait_for(condition: Callable[[], bool], timeout: float, what: str, session: Session, job_id: int,
             workers: list[WorkerProcess]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        dead = [w for w in workers if w.process.poll() is not None]
        if dead or time.monotonic() > deadline:
            reason = f"worker exited with {dead[0].process.returncode}" if dead else f"timed out after {timeout}s"
            logs = "\n".join(f"--- worker {w.pid} log tail ---\n{w.log_tail()}" for w in workers)
            pytest.fail(f"waiting for {what}: {reason}\n--- job log ---\n" + "\n".join(job_log(session, job_id))
                        + "\n" + logs)
        time.sleep(0.2)


def wait_for_status(session, job_id, statuses, timeout, workers) -> Job:
    wait_for(lambda: job_snapshot(session, job_id).status in statuses, timeout,
             f"job {job_id} to be {'/'.join(s.value for s in statuses)}", session, job_id, workers)
    return job_snapshot(session, job_id)


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the run's latest complete checkpoint (as llm.train finds it), or None."""
    from llm.train import checkpoint_dir

    try:
        found = checkpoint_dir(run_dir)
        return json.loads((found / "checkpoint.json").read_text())["step"] if found else None
    except (FileNotFoundError, json.JSONDecodeError, KeyError):  # renamed while we looked
        return None


def loss_steps(session: Session, job_id: int) -> list[int]:
    session.rollback()
    return sorted(session.scalars(select(Metric.step).where(Metric.job_id == job_id, Metric.name == "loss")))


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
