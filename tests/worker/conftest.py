"""Fixtures of the worker tests: a broker (embedded redis-server or the Redis on 6379 with a queue of the test's own),
worker processes started on demand and killed at teardown, an uploaded corpus and a tokenizer trained on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from db.models import Dataset, DatasetKind
from tests.support.worker_processes import REPO_ROOT, WorkerProcess, write_corpus


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


@pytest.fixture
def start_worker(tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """A function that starts `python -m worker.runtime.main` with the current WORKBENCH_* environment
    (plus overrides as keywords, its own options as arguments: `start("--processes", "2")`); every worker it
    started is stopped at teardown (SIGTERM, then SIGKILL)."""
    started: list[WorkerProcess] = []

    def start(*arguments: str, **env_overrides: str) -> WorkerProcess:
        env = {**os.environ, **env_overrides,
               "PYTHONUNBUFFERED": "1",
               # Two shared cores: one torch thread per worker keeps the suite polite.
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log_path = tmp_path / f"worker-{len(started)}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker.runtime.main", "--loglevel", "info", *arguments],
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
