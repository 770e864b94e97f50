"""The job lifecycle against real databases (SQLite and PostgreSQL) and a real Redis queue.

Covers worker/jobs.py (validation, claim order, cancel, resume, requeue), worker/reaper.py
(stale heartbeats), worker/heartbeat.py (cancel flag and fencing) and worker/broker.py (the
embedded redis-server). No worker process runs here; tests/worker/test_worker_integration.py starts one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import Dataset, DatasetKind, Job, JobLog, JobStatus, utcnow
from db.session import SessionLocal
from tests.support.jobs import log_lines
from worker.jobs import lifecycle as jobs
from worker.jobs.lifecycle import JobParamsError, JobStateError
from worker.runtime.heartbeat import JobHeartbeat
from worker.runtime.reaper import MAX_LOST_ATTEMPTS, reap_stale_jobs


def add_dataset(session: Session, kind: DatasetKind = DatasetKind.text) -> Dataset:
    dataset = Dataset(name="corpus", kind=kind, format="txt", path="datasets/1/corpus.txt",
                      original_filename="corpus.txt", size_bytes=10, stats={})
    session.add(dataset)
    session.commit()
    return dataset


def job_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Job))


def make_job(session: Session, dataset: Dataset, priority: int = 0, **params) -> Job:
    return jobs.create_job(session, "pretrain", {"dataset_id": dataset.id, "max_steps": 10, **params},
                           priority=priority)


# ----------------------------------------------------------------------------- validation

def test_create_job_stores_a_queued_job_with_normalized_params(workbench_env, session):
    dataset = add_dataset(session)
    job = jobs.create_job(session, "pretrain", {"dataset_id": dataset.id, "max_steps": 30.0, "lr": 1e-3},
                          owner_id=None, priority=3)
    session.expire_all()
    stored = session.get(Job, job.id)
    assert stored.status == JobStatus.queued
    assert stored.kind == "pretrain"
    assert stored.priority == 3
    assert stored.run_dir == f"runs/{job.id}"
    assert stored.dataset_id == dataset.id
    # 30.0 from a web form is a whole number; every declared default is filled in so the row says what
    # runs (the device is left out: unless a job pins one, the worker's own setting decides).
    from llm.train_config import TrainConfig

    defaults = TrainConfig()
    assert stored.params["max_steps"] == 30 and isinstance(stored.params["max_steps"], int)
    assert stored.params["lr"] == 1e-3 and stored.params["dataset_id"] == dataset.id
    assert stored.params["tokenizer"] == "gpt2" and stored.params["preset"] == "tiny"
    assert stored.params["batch_size"] == defaults.batch_size
    # A default counted in steps shrinks with a short run (llm.train_config.fit_schedule_to_steps).
    assert stored.params["warmup"] == round(defaults.warmup * 30 / defaults.max_steps)
    assert "device" not in stored.params and "min_lr" not in stored.params
    assert stored.attempts == 0 and not stored.cancel_requested
    # ... and the log says so.
    assert log_lines(session, job.id) == ["queued pretrain job (priority 3)",
                                          "warmup 100 → 3, eval_every 250 → 8, checkpoint_every 500 → 15: equal to "
                                          "their defaults, they were fitted to this 30-step run (send other values "
                                          "to keep yours)"]


BAD_PARAMS = [
    # (kind, params without dataset_id, field, words the message must contain)
    ("pretrain", {"max_steps": 0}, "max_steps", "positive whole number"),
    ("pretrain", {"max_steps": -5}, "max_steps", "positive whole number"),
    ("pretrain", {"max_steps": 2.5}, "max_steps", "whole number"),
    ("pretrain", {"max_steps": "ten"}, "max_steps", "whole number"),
    ("pretrain", {"max_steps": True}, "max_steps", "whole number"),
    ("pretrain", {"lr": 0}, "lr", "greater than 0"),
    ("pretrain", {"lr": float("nan")}, "lr", "must be a number"),
    ("pretrain", {"tokenizer": "no-such-tokenizer"}, "tokenizer", "unknown tokenizer"),
    ("pretrain", {"preset": "enormous"}, "preset", "unknown preset"),
    ("pretrain", {"learning_rate": 0.1}, "learning_rate", "unknown parameter"),
    ("pretrain", {"n_embd": 100, "n_head": 3}, "n_head", "divisible"),
    ("pretrain", {"lr": 1e-4, "min_lr": 1e-3}, "min_lr", "greater than lr"),
    ("pretrain", {"device": "tpu"}, "device", "one of"),
    ("pretrain", {"compile": "sometimes"}, "compile", "true, false or 'auto'"),
    ("prepare", {"val_fraction": 0.9}, "val_fraction", "at most 0.5"),
    ("train_tokenizer", {"vocab_size": 100, "name": "mine"}, "vocab_size", "at least 257"),
    ("train_tokenizer", {"vocab_size": 1000, "name": "../evil"}, "name", "letters, digits"),
    ("train_tokenizer", {"vocab_size": 1000, "name": "gpt2"}, "name", "already exists"),
    ("train_tokenizer", {"vocab_size": 1000}, "name", "is required"),
]


def test_bad_params_name_the_field_and_store_nothing(workbench_env, session):
    dataset = add_dataset(session)
    for kind, params, field, words in BAD_PARAMS:
        with pytest.raises(JobParamsError) as caught:
            jobs.create_job(session, kind, {"dataset_id": dataset.id, **params})
        assert caught.value.field == field, (kind, params, str(caught.value))
        assert words in caught.value.message, (kind, params, str(caught.value))
        assert str(caught.value).startswith(f"{field}: ")
    assert job_count(session) == 0
    assert session.scalar(select(func.count()).select_from(JobLog)) == 0


def test_dataset_kind_and_priority_are_validated(workbench_env, session):
    chat = add_dataset(session, DatasetKind.chat)
    cases = [
        ("pretrain", {"max_steps": 5}, 0, "dataset_id", "is required"),
        ("pretrain", {"dataset_id": 9999}, 0, "dataset_id", "no dataset with id 9999"),
        ("pretrain", {"dataset_id": chat.id}, 0, "dataset_id", "needs a text dataset"),
        ("pretrain", {"dataset_id": chat.id}, 1000, "priority", "between -100 and 100"),
        ("fly", {}, 0, "kind", "unknown job kind 'fly'; choose one of clean, prepare, train_tokenizer, pretrain"),
    ]
    for kind, params, priority, field, words in cases:
        with pytest.raises(JobParamsError) as caught:
            jobs.create_job(session, kind, params, priority=priority)
        assert (caught.value.field, words in caught.value.message) == (field, True), str(caught.value)
    assert job_count(session) == 0


def test_trained_tokenizer_names_are_accepted(workbench_env, session):
    dataset = add_dataset(session)
    trained = workbench_env.tokenizers_dir / "tiny-bpe"
    trained.mkdir(parents=True)
    (trained / "tokenizer.json").write_text("{}")
    job = jobs.create_job(session, "prepare", {"dataset_id": dataset.id, "tokenizer": "tiny-bpe"})
    assert job.params["tokenizer"] == "tiny-bpe"
    with pytest.raises(JobParamsError, match="already exists"):
        jobs.create_job(session, "train_tokenizer", {"dataset_id": dataset.id, "vocab_size": 300,
                                                     "name": "tiny-bpe"})


# ----------------------------------------------------------------------------- claiming

def test_claim_takes_priority_then_submission_order(workbench_env, session):
    dataset = add_dataset(session)
    low, high_a, normal, high_b, lowest = (make_job(session, dataset, p) for p in (0, 5, 0, 5, -1))
    claimed = []
    while (job := jobs.claim_next_job(session, "test-host")) is not None:
        claimed.append(job.id)
        assert job.status == JobStatus.running
        assert job.attempts == 1
        assert job.worker_host == "test-host"
        assert job.started_at is not None and job.heartbeat_at is not None
    assert claimed == [high_a.id, high_b.id, low.id, normal.id, lowest.id]


def test_concurrent_claims_take_each_job_exactly_once(workbench_env, database_url, session):
    dataset = add_dataset(session)
    created = [make_job(session, dataset, priority=i % 3).id for i in range(12)]
    claimed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        own = SessionLocal(database_url)
        try:
            while (job := jobs.claim_next_job(own, name)) is not None:
                with lock:
                    claimed.append(job.id)
        except BaseException as error:  # surfaced below; a thread's exception is otherwise lost
            errors.append(error)
        finally:
            own.close()

    threads = [threading.Thread(target=claimer, args=(f"worker-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sorted(claimed) == sorted(created)  # every job once, none twice
    session.expire_all()
    assert all(session.get(Job, job_id).attempts == 1 for job_id in created)


def test_cancelled_jobs_are_not_claimed(workbench_env, session):
    dataset = add_dataset(session)
    first, second = make_job(session, dataset), make_job(session, dataset)
    jobs.request_cancel(session, first.id)
    assert jobs.claim_next_job(session, "w").id == second.id
    assert jobs.claim_next_job(session, "w") is None


# ----------------------------------------------------------------------------- cancel / resume

def test_cancel_semantics(workbench_env, session):
    dataset = add_dataset(session)
    running, queued = make_job(session, dataset), make_job(session, dataset)
    assert jobs.claim_next_job(session, "w").id == running.id  # the older of two equal priorities

    cancelled = jobs.request_cancel(session, queued.id)
    assert cancelled.status == JobStatus.cancelled
    assert cancelled.finished_at is not None

    flagged = jobs.request_cancel(session, running.id)
    assert flagged.status == JobStatus.running  # the worker stops it cooperatively
    assert flagged.cancel_requested

    with pytest.raises(JobStateError, match="already cancelled"):
        jobs.request_cancel(session, queued.id)
    with pytest.raises(jobs.JobNotFoundError):
        jobs.request_cancel(session, 424242)


def test_resume_requeues_a_cancelled_or_failed_job_and_sends_a_message(workbench_env, session, job_queue,
                                                                       queued_job_ids):
    dataset = add_dataset(session)
    job = make_job(session, dataset)
    jobs.request_cancel(session, job.id)
    assert queued_job_ids() == []

    resumed = jobs.resume_job(session, job.id)
    assert resumed.status == JobStatus.queued
    assert resumed.run_dir == f"runs/{job.id}"  # same directory: training continues from its checkpoint
    assert not resumed.cancel_requested and resumed.finished_at is None
    assert queued_job_ids() == [job.id]

    claimed = jobs.claim_next_job(session, "w")
    assert jobs.finish_job(session, claimed.id, claimed.attempts, JobStatus.failed, error="boom")
    resumed = jobs.resume_job(session, job.id)
    assert resumed.status == JobStatus.queued and resumed.error is None
    assert resumed.attempts == 1  # attempts count claims; the next claim makes it 2

    with pytest.raises(JobStateError, match="only cancelled or failed"):
        jobs.resume_job(session, job.id)  # queued already


def test_submit_and_requeue_orphans_send_messages_after_commit(workbench_env, session, job_queue,
                                                               queued_job_ids):
    dataset = add_dataset(session)
    low = jobs.submit_job(session, "pretrain", {"dataset_id": dataset.id})
    high = jobs.submit_job(session, "pretrain", {"dataset_id": dataset.id}, priority=10)
    assert queued_job_ids() == [low.id, high.id]
    assert jobs.requeue_orphans(session) == [high.id, low.id]  # best first
    assert queued_job_ids() == [low.id, high.id, high.id, low.id]


def test_enqueue_reports_an_unreachable_broker_without_raising(workbench_env, session, monkeypatch):
    dataset = add_dataset(session)
    monkeypatch.setenv("WORKBENCH_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    started = time.monotonic()
    job = jobs.submit_job(session, "pretrain", {"dataset_id": dataset.id})
    assert time.monotonic() - started < 15
    session.expire_all()
    assert session.get(Job, job.id).status == JobStatus.queued  # still there for requeue_orphans


# ----------------------------------------------------------------------------- finishing is fenced

def test_a_replaced_attempt_cannot_record_its_outcome(workbench_env, session, job_queue):
    dataset = add_dataset(session)
    job = make_job(session, dataset)
    first_attempt = jobs.claim_next_job(session, "old-worker").attempts
    # The old worker goes silent; a reaper takes the job back and another worker claims it.
    session.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    session.commit()
    assert reap_stale_jobs(session, 60) == [job.id]
    second = jobs.claim_next_job(session, "new-worker")
    second_attempt = second.attempts
    assert second_attempt == first_attempt + 1

    assert not jobs.finish_job(session, job.id, first_attempt, JobStatus.failed, error="late")
    assert jobs.finish_job(session, job.id, second_attempt, JobStatus.succeeded)
    session.expire_all()
    assert session.get(Job, job.id).status == JobStatus.succeeded
    assert session.get(Job, job.id).error is None


# ----------------------------------------------------------------------------- reaper

def _age_heartbeat(session: Session, job_id: int, seconds: float) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))
    session.commit()


def test_reaper_requeues_stale_jobs_and_leaves_fresh_ones(workbench_env, session, job_queue, queued_job_ids):
    dataset = add_dataset(session)
    stale, fresh = make_job(session, dataset), make_job(session, dataset)
    jobs.claim_next_job(session, "dead-worker")
    jobs.claim_next_job(session, "live-worker")
    _age_heartbeat(session, stale.id, 120)
    _age_heartbeat(session, fresh.id, 5)

    assert reap_stale_jobs(session, 60) == [stale.id]
    session.expire_all()
    reaped, alive = session.get(Job, stale.id), session.get(Job, fresh.id)
    assert reaped.status == JobStatus.queued
    assert reaped.attempts == 1  # kept: the next claim makes it 2
    assert reaped.worker_host is None and reaped.heartbeat_at is None
    assert reaped.run_dir == f"runs/{stale.id}"
    assert any(line.startswith("worker lost: dead-worker") for line in log_lines(session, stale.id))
    assert alive.status == JobStatus.running
    assert queued_job_ids() == [stale.id]
    assert reap_stale_jobs(session, 60) == []  # a second sweep (another reaper) finds nothing


def test_reaper_cancels_a_dead_job_that_was_being_cancelled(workbench_env, session, job_queue, queued_job_ids):
    dataset = add_dataset(session)
    job = make_job(session, dataset)
    jobs.claim_next_job(session, "w")
    jobs.request_cancel(session, job.id)
    _age_heartbeat(session, job.id, 120)
    assert reap_stale_jobs(session, 60) == []
    session.expire_all()
    assert session.get(Job, job.id).status == JobStatus.cancelled
    assert queued_job_ids() == []


def test_reaper_gives_up_on_a_job_that_keeps_losing_workers(workbench_env, session, job_queue):
    dataset = add_dataset(session)
    job = make_job(session, dataset)
    for lost in range(1, MAX_LOST_ATTEMPTS + 1):
        jobs.claim_next_job(session, f"worker-{lost}")
        _age_heartbeat(session, job.id, 120)
        requeued = reap_stale_jobs(session, 60)
        session.expire_all()
        if lost < MAX_LOST_ATTEMPTS:
            assert requeued == [job.id]
    failed = session.get(Job, job.id)
    assert failed.status == JobStatus.failed
    assert f"stopped responding {MAX_LOST_ATTEMPTS} times" in failed.error


# ----------------------------------------------------------------------------- heartbeat

def test_heartbeat_stamps_reads_cancel_and_notices_a_lost_job(workbench_env, database_url, session, job_queue):
    dataset = add_dataset(session)
    job = make_job(session, dataset)
    attempt = jobs.claim_next_job(session, "w").attempts
    _age_heartbeat(session, job.id, 30)

    with JobHeartbeat(job.id, attempt, interval_s=0.1, database_url=database_url) as heartbeat:
        session.expire_all()
        assert utcnow() - session.get(Job, job.id).heartbeat_at < timedelta(seconds=5)
        assert not heartbeat.should_stop()

        jobs.request_cancel(session, job.id)
        deadline = time.monotonic() + 5
        while not heartbeat.should_stop() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert heartbeat.stop_reason == "cancelled"

    # Another attempt owns the job now: the old attempt's heartbeat finds no row to stamp.
    session.execute(update(Job).where(Job.id == job.id).values(attempts=Job.attempts + 1))
    session.commit()
    stale_heartbeat = JobHeartbeat(job.id, attempt, interval_s=10, database_url=database_url)
    stale_heartbeat.beat()
    assert stale_heartbeat.stop_reason == "lost"


# ----------------------------------------------------------------------------- embedded broker

def test_embedded_redis_serves_tcp_and_stops_cleanly(tmp_path):
    from worker.runtime.broker import start_embedded_redis

    broker = start_embedded_redis(tmp_path)
    try:
        assert broker.url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(broker.url)
        assert client.ping()
        client.close()
    finally:
        broker.stop()
    assert not broker.is_running()
    broker.stop()  # idempotent


@pytest.mark.subprocess
def test_embedded_redis_dies_with_its_parent(tmp_path):
    """Even `kill -9` of the app leaves no orphan redis-server (PR_SET_PDEATHSIG)."""
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from worker.runtime.broker import start_embedded_redis;"
         f"broker = start_embedded_redis({str(tmp_path)!r}); print(broker.pid, flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        server_pid = int(parent.stdout.readline())
        os.kill(server_pid, 0)  # alive
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while not _exited(server_pid):
        if time.monotonic() > deadline:
            os.kill(server_pid, signal.SIGKILL)
            pytest.fail(f"redis-server {server_pid} outlived its parent")
        time.sleep(0.1)


def _exited(pid: int) -> bool:
    """True once `pid` is gone or a zombie (an exited process that init has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_a_job_that_beats_in_the_broker_survives_a_long_database_stall(workbench_env, database_url, session,
                                                                      job_queue, redis_url):
    # The database was stalled for two minutes: the job's heartbeats could not stamp it, but they reached the
    # broker. The reaper must not count that as a lost worker; once the broker's beat is old too, it does.
    from worker.jobs.presence import job_beat_key

    dataset = add_dataset(session)
    job = make_job(session, dataset)
    attempt = jobs.claim_next_job(session, "busy-db-worker").attempts
    heartbeat = JobHeartbeat(job.id, attempt, interval_s=10, database_url="postgresql+psycopg://nobody@127.0.0.1:1/x",
                             broker_url=redis_url, queue=job_queue, stale_after_seconds=60)
    heartbeat.beat()  # its database write fails (nothing listens there), the broker's beat lands
    assert not heartbeat.should_stop()
    _age_heartbeat(session, job.id, 120)
    for _sweep in range(MAX_LOST_ATTEMPTS + 1):
        assert reap_stale_jobs(session, 60) == []
    session.expire_all()
    assert session.get(Job, job.id).status == JobStatus.running
    assert not any(line.startswith("worker lost") for line in log_lines(session, job.id))
    # A beat of an older attempt does not vouch for this one; a beat older than the stale limit neither.
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(job_beat_key(job_queue, job.id), f"{attempt} {time.time() - 61:.3f}")
        assert reap_stale_jobs(session, 60) == [job.id]
    finally:
        client.delete(job_beat_key(job_queue, job.id))
        client.close()
