"""Queued jobs whose message was lost are sent again by the reaper; duplicate messages stay harmless.

Real Redis (a queue of the test's own) and a real database. The broker reader is checked against
messages Celery itself published; the reaper's sweep sends a message only for the jobs queued for a
while with none waiting; a second message for a job runs nothing twice.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from db.models import Dataset, DatasetKind, Job, JobEvent, JobStatus, utcnow
from worker.jobs import lifecycle as jobs
from worker.runtime.broker_state import waiting_job_ids
from worker.jobs.messages import send_run_job
from worker.runtime.reaper import resend_lost_messages
from worker.runtime.runner import run_next_job


def queued_job(session, *, queued_ago_s: float) -> Job:
    """A queued prepare job whose last event (its submission) is `queued_ago_s` old."""
    job = Job(kind="prepare", status=JobStatus.queued, params={"dataset_id": 1, "tokenizer": "gpt2"},
              created_at=utcnow() - timedelta(seconds=queued_ago_s))
    session.add(job)
    session.flush()
    session.add(JobEvent(job_id=job.id, action="submitted", created_at=job.created_at))
    session.commit()
    return job


def actions(session, job_id: int) -> list[str]:
    session.expire_all()
    return list(session.scalars(select(JobEvent.action).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_only_jobs_queued_a_while_with_no_waiting_message_are_sent_again(workbench_env, session, job_queue,
                                                                        redis_url, queued_job_ids):
    has_message = queued_job(session, queued_ago_s=120)
    lost = queued_job(session, queued_ago_s=120)
    lost_too = queued_job(session, queued_ago_s=90)
    just_submitted = queued_job(session, queued_ago_s=1)  # its message may still be on its way
    send_run_job(has_message.id)
    assert waiting_job_ids(redis_url, job_queue) == {has_message.id}

    resent = resend_lost_messages(session, 30)
    assert resent == [lost.id, lost_too.id]
    assert sorted(queued_job_ids()) == sorted([has_message.id, lost.id, lost_too.id])
    assert actions(session, lost.id) == ["submitted", "resent"]
    assert actions(session, has_message.id) == ["submitted"]
    assert actions(session, just_submitted.id) == ["submitted"]

    # The next sweep finds their messages waiting (and "queued since" is now the resend): nothing more.
    assert resend_lost_messages(session, 30) == []
    assert len(queued_job_ids()) == 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_nothing_is_sent_or_recorded_while_the_broker_is_unreachable(workbench_env, session):
    lost = queued_job(session, queued_ago_s=120)

    def broker_down() -> set[int]:
        raise ConnectionError("Connection refused")

    sent = []
    assert resend_lost_messages(session, 30, waiting_job_ids=broker_down, send=sent.append) == []
    assert sent == [] and actions(session, lost.id) == ["submitted"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_duplicate_message_runs_no_job_twice(workbench_env, session):
    # A prepare job whose corpus file is gone: it runs (and fails) quickly, through the real runner.
    dataset = Dataset(name="gone", kind=DatasetKind.text, format="txt", path="datasets/gone/corpus.txt",
                      original_filename="gone.txt", size_bytes=1, stats={})
    session.add(dataset)
    session.commit()
    job = Job(kind="prepare", status=JobStatus.queued, params={"dataset_id": dataset.id, "tokenizer": "gpt2"},
              dataset_id=dataset.id)
    session.add(job)
    session.commit()

    assert run_next_job(message_job_id=job.id, settings=workbench_env) == job.id
    # The same message again (a resend, a redelivery): no queued job is left, so nothing runs.
    assert run_next_job(message_job_id=job.id, settings=workbench_env) is None
    session.expire_all()
    done = session.get(Job, job.id)
    assert done.status == JobStatus.failed and done.attempts == 1
    assert "missing" in done.error


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_requeue_orphans_records_what_it_sent(workbench_env, session, job_queue, queued_job_ids):
    first, second = queued_job(session, queued_ago_s=5), queued_job(session, queued_ago_s=5)
    assert jobs.requeue_orphans(session, reason="the embedded Redis was restarted") == [first.id, second.id]
    assert sorted(queued_job_ids()) == [first.id, second.id]
    assert actions(session, first.id) == ["submitted", "resent"]
