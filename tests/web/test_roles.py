"""Roles on the real API and database: trainers change only their own jobs (admins any), every change
names who made it (GET /api/jobs/{id} `events`), labelers see neither datasets nor jobs nor non-chat
models, and a job that cannot resume is not resumed."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from db.models import Job, JobStatus, Model, ModelKind
from tests.conftest import ADMIN, LABELER, TRAINER
from tests.support.records import make_job
from web.services import Action, can, can_change


def make_model(session: Session, owner, kind: ModelKind, name: str) -> int:
    model = Model(name=name, kind=kind, tokenizer="gpt2", config={}, path=f"models/{name}", owner_id=owner.id)
    session.add(model)
    session.commit()
    return model.id


def status_of(session: Session, job_id: int) -> JobStatus:
    session.expire_all()
    return session.get(Job, job_id).status


def test_the_access_table_says_who_may_change_whose_jobs():
    trainer, other_trainer = {"id": 1, "role": "trainer"}, {"id": 2, "role": "trainer"}
    admin, labeler = {"id": 3, "role": "admin"}, {"id": 4, "role": "labeler"}
    own, anyone = Action.change_own_job, Action.change_any_job
    assert can_change(trainer, 1, own, anyone) and not can_change(other_trainer, 1, own, anyone)
    assert can_change(admin, 1, own, anyone) and can_change(admin, None, own, anyone)
    assert not can_change(trainer, None, own, anyone)  # a job of nobody (the CLI's) is an admin's to change
    assert not can_change(labeler, 4, own, anyone)
    assert can(trainer, Action.read_training) and not can(labeler, Action.read_training)


def test_a_trainer_cannot_change_an_admins_job_and_the_admin_can_change_the_trainers(
        client: TestClient, session: Session, users):
    admins_job = make_job(session, users["admin"])
    for method, path, body in (("POST", "cancel", None), ("PATCH", "", {"name": "mine now"}), ("DELETE", "", None)):
        response = client.request(method, f"/api/jobs/{admins_job}/{path}".rstrip("/"), auth=TRAINER, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert "belongs to someone else" in response.json()["detail"]
    assert status_of(session, admins_job) == JobStatus.running
    assert session.get(Job, admins_job).name is None

    trainers_job = make_job(session, users["trainer"])
    assert client.post(f"/api/jobs/{trainers_job}/cancel", auth=ADMIN).status_code == 200
    assert client.post(f"/api/jobs/{trainers_job}/cancel", auth=TRAINER).status_code == 200  # the owner too
    events = client.get(f"/api/jobs/{trainers_job}", auth=TRAINER).json()["events"]
    assert [(e["action"], e["user"]) for e in events] == [
        ("submitted", TRAINER[0]), ("cancel_requested", ADMIN[0]), ("cancel_requested", TRAINER[0])]
    assert all(e["at"] for e in events)


def test_cancel_and_resume_record_who_did_it_and_a_labeler_changes_nothing(
        client: TestClient, session: Session, users):
    job_id = make_job(session, users["trainer"], status=JobStatus.queued)
    assert client.post(f"/api/jobs/{job_id}/cancel", auth=LABELER).status_code == 403
    assert client.post(f"/api/jobs/{job_id}/cancel", auth=TRAINER).status_code == 200
    assert client.post(f"/api/jobs/{job_id}/resume", auth=ADMIN).status_code == 200
    events = client.get(f"/api/jobs/{job_id}", auth=ADMIN).json()["events"]
    assert [(e["action"], e["user"]) for e in events][1:] == [("cancelled", TRAINER[0]), ("resumed", ADMIN[0])]


def test_a_job_that_cannot_resume_is_refused_with_a_409_and_stays_failed(client: TestClient, session: Session, users):
    job_id = make_job(session, users["trainer"], status=JobStatus.failed, resumable=False,
                      error="killed for memory")
    assert client.get(f"/api/jobs/{job_id}", auth=TRAINER).json()["resumable"] is False
    response = client.post(f"/api/jobs/{job_id}/resume", auth=TRAINER)
    assert response.status_code == 409 and "cannot be resumed" in response.json()["detail"]
    assert status_of(session, job_id) == JobStatus.failed
    assert [e["action"] for e in client.get(f"/api/jobs/{job_id}", auth=TRAINER).json()["events"]] == ["submitted"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_labelers_get_403_on_datasets_jobs_and_downloads_and_see_only_chat_models(
        client: TestClient, session: Session, users):
    job_id = make_job(session, users["trainer"])
    base = make_model(session, users["admin"], ModelKind.base, "base-model")
    chat = make_model(session, users["trainer"], ModelKind.sft, "chat-model")
    for path in ("/api/datasets", "/api/datasets/1", "/api/jobs", f"/api/jobs/{job_id}",
                 f"/api/jobs/{job_id}/metrics", f"/api/jobs/{job_id}/logs", f"/api/models/{chat}/download",
                 "/api/job-kinds"):
        response = client.get(path, auth=LABELER)
        assert response.status_code == 403, (path, response.text)
        assert "labeler" in response.json()["detail"]
    assert client.get("/api/jobs", auth=TRAINER).status_code == 200

    assert [m["id"] for m in client.get("/api/models", auth=LABELER).json()] == [chat]
    assert client.get(f"/api/models/{chat}", auth=LABELER).status_code == 200
    assert client.get(f"/api/models/{base}", auth=LABELER).status_code == 404
    assert [m["id"] for m in client.get("/api/models", auth=TRAINER).json()] == [chat, base]
