"""Renaming and deleting datasets over the API: who may (owner or admin; other trainers and labelers not),
what stops a delete (queued or running jobs, named), what a delete keeps (finished jobs, without the
dataset, with an event saying who deleted it) and what it removes (the row, then the file and prepared data).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Dataset, Job, JobEvent, JobStatus, Role
from db.settings import Settings
from db.users import create_user
from tests.conftest import ADMIN, LABELER, TRAINER

OTHER_TRAINER = ("trainer2", "trainer2-password")


def upload(client: TestClient, content: str, auth=TRAINER, name: str = "corpus") -> dict:
    response = client.post("/api/datasets", auth=auth, files={"file": ("c.txt", content.encode(), "text/plain")},
                           data={"name": name, "kind": "text"})
    assert response.status_code == 201, response.text
    return response.json()


def add_job(session: Session, dataset_id: int, status: JobStatus, kind: str = "pretrain") -> int:
    job = Job(kind=kind, status=status, params={"dataset_id": dataset_id}, dataset_id=dataset_id)
    session.add(job)
    session.commit()
    return job.id


@pytest.fixture
def other_trainer(users, session: Session):
    user = create_user(session, *OTHER_TRAINER, Role.trainer)
    session.commit()
    return user


def test_owner_and_admin_rename_others_may_not(client: TestClient, other_trainer, session: Session):
    dataset = upload(client, "one\n\ntwo")
    path = f"/api/datasets/{dataset['id']}"
    assert client.patch(path, json={"name": "  web crawl \u202e "}, auth=TRAINER).status_code == 422  # a bidi override
    renamed = client.patch(path, json={"name": "  web crawl  "}, auth=TRAINER)
    assert renamed.status_code == 200 and renamed.json()["name"] == "web crawl"
    assert client.patch(path, json={"name": "mine now"}, auth=OTHER_TRAINER).status_code == 403
    assert client.patch(path, json={"name": "labels"}, auth=LABELER).status_code == 403
    assert client.patch(path, json={"name": "   "}, auth=TRAINER).status_code == 422
    assert client.patch(path, json={"name": "by admin"}, auth=ADMIN).json()["name"] == "by admin"
    assert client.patch("/api/datasets/999999", json={"name": "x"}, auth=ADMIN).status_code == 404
    assert client.get(path, auth=TRAINER).json()["name"] == "by admin"


def test_delete_is_refused_while_jobs_use_it_naming_them(client: TestClient, api_settings: Settings,
                                                          session: Session):
    dataset = upload(client, "one\n\ntwo")
    queued = add_job(session, dataset["id"], JobStatus.queued)
    running = add_job(session, dataset["id"], JobStatus.running, "prepare")
    response = client.delete(f"/api/datasets/{dataset['id']}", auth=TRAINER)
    assert response.status_code == 409
    assert f"job #{queued} (pretrain, queued)" in response.json()["detail"]
    assert f"job #{running} (prepare, running)" in response.json()["detail"]
    session.expire_all()
    assert session.get(Dataset, dataset["id"]) is not None
    assert (api_settings.data_dir / "datasets" / str(dataset["id"]) / "original.txt").is_file()


def test_delete_keeps_finished_jobs_and_removes_row_then_files(client: TestClient, api_settings: Settings,
                                                                session: Session, users):
    dataset = upload(client, "one\n\ntwo")
    directory: Path = api_settings.data_dir / "datasets" / str(dataset["id"])
    (directory / "prepared" / "gpt2").mkdir(parents=True)
    (directory / "prepared" / "gpt2" / "train.bin").write_bytes(b"\0" * 16)
    succeeded = add_job(session, dataset["id"], JobStatus.succeeded)
    failed = add_job(session, dataset["id"], JobStatus.failed)
    assert client.delete(f"/api/datasets/{dataset['id']}", auth=LABELER).status_code == 403
    response = client.delete(f"/api/datasets/{dataset['id']}", auth=TRAINER)
    assert response.status_code == 204, response.text
    session.expire_all()
    assert session.get(Dataset, dataset["id"]) is None
    assert not directory.exists()
    jobs = {job.id: job for job in session.scalars(select(Job))}
    assert jobs[succeeded].dataset_id is None and jobs[failed].dataset_id is None
    assert jobs[succeeded].resumable and not jobs[failed].resumable  # its data is gone: no resume
    events = session.scalars(select(JobEvent).where(JobEvent.action == "dataset_deleted")).all()
    assert {event.job_id for event in events} == {succeeded, failed}
    assert {event.user_id for event in events} == {users["trainer"].id}
    assert client.get(f"/api/datasets/{dataset['id']}", auth=TRAINER).status_code == 404


def test_only_the_owner_or_an_admin_deletes(client: TestClient, other_trainer, session: Session):
    dataset = upload(client, "one\n\ntwo")
    response = client.delete(f"/api/datasets/{dataset['id']}", auth=OTHER_TRAINER)
    assert response.status_code == 403 and "belongs to someone else" in response.json()["detail"]
    assert client.delete(f"/api/datasets/{dataset['id']}", auth=ADMIN).status_code == 204
    assert client.delete(f"/api/datasets/{dataset['id']}", auth=ADMIN).status_code == 404
