"""Renaming and deleting jobs and models over the real API: owner or admin only, refused (409 naming the
dependents) while something depends on the thing, a running job never deleted, the files removed
after the row, and every rename recorded with who made it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Job, JobEvent, JobLog, JobStatus, Metric, Model, ModelKind
from tests.conftest import ADMIN, TRAINER
from tests.support.records import add_model, make_job


def count(session: Session, table, **where) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(getattr(table, column) == value)
    return session.scalar(query)


def test_renaming_a_job_records_who_and_a_blank_name_shows_the_kind_again(client: TestClient, session: Session,
                                                                         users):
    job_id = make_job(session, users["trainer"])
    response = client.patch(f"/api/jobs/{job_id}", auth=TRAINER, json={"name": "  tiny shakespeare  "})
    assert response.status_code == 200 and response.json()["name"] == "tiny shakespeare"
    assert client.patch(f"/api/jobs/{job_id}", auth=ADMIN, json={"name": ""}).json()["name"] is None
    events = client.get(f"/api/jobs/{job_id}", auth=TRAINER).json()["events"]
    assert [(e["action"], e["user"], e["detail"]) for e in events[1:]] == [
        ("renamed", TRAINER[0], "(none) → tiny shakespeare"), ("renamed", ADMIN[0], "tiny shakespeare → (none)")]
    too_long = client.patch(f"/api/jobs/{job_id}", auth=TRAINER, json={"name": "x" * 201})
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["loc"][-1] == "name"
    assert client.patch("/api/jobs/999", auth=ADMIN, json={"name": "x"}).status_code == 404


def test_a_running_job_cannot_be_deleted_and_a_finished_one_goes_with_its_records_and_run_dir(
        client: TestClient, session: Session, users, api_settings):
    job_id = make_job(session, users["trainer"])
    session.add_all([Metric(job_id=job_id, step=1, name="loss", value=3.0), JobLog(job_id=job_id, line="step 1")])
    session.commit()
    run_dir = api_settings.data_dir / "runs" / str(job_id)
    (run_dir / "checkpoint").mkdir(parents=True)
    response = client.delete(f"/api/jobs/{job_id}", auth=TRAINER)
    assert response.status_code == 409 and "cancel it first" in response.json()["detail"]
    assert run_dir.is_dir() and count(session, Job) == 1

    session.get(Job, job_id).status = JobStatus.cancelled
    session.commit()
    assert client.delete(f"/api/jobs/{job_id}", auth=TRAINER).status_code == 204
    session.expire_all()
    assert count(session, Job) == 0
    assert count(session, Metric) == count(session, JobLog) == count(session, JobEvent) == 0
    assert not run_dir.exists()
    assert client.get(f"/api/jobs/{job_id}", auth=TRAINER).status_code == 404


def test_a_job_whose_model_exists_is_not_deleted_until_the_model_is(client: TestClient, session: Session, users,
                                                                      api_settings):
    job_id = make_job(session, users["trainer"], status=JobStatus.succeeded)
    model_id = add_model(session, api_settings, users["trainer"], "trained", path=f"runs/{job_id}/model",
                         job_id=job_id)
    session.get(Job, job_id).output_model_id = model_id
    session.commit()
    response = client.delete(f"/api/jobs/{job_id}", auth=TRAINER)
    assert response.status_code == 409 and f"model #{model_id} 'trained'" in response.json()["detail"]

    assert client.delete(f"/api/models/{model_id}", auth=TRAINER).status_code == 204
    session.expire_all()
    assert session.get(Job, job_id).output_model_id is None  # the job stays, without an output
    assert not (api_settings.data_dir / "runs" / str(job_id) / "model").exists()
    assert client.delete(f"/api/jobs/{job_id}", auth=TRAINER).status_code == 204


def test_deleting_a_model_is_refused_naming_children_adapters_and_jobs_that_use_it(
        client: TestClient, session: Session, users, api_settings):
    base = add_model(session, api_settings, users["trainer"], "base")
    child = add_model(session, api_settings, users["trainer"], "child", kind=ModelKind.sft, parent_model_id=base)
    # An adapter whose parent row is another model but whose files load onto `base`.
    adapter = add_model(session, api_settings, users["trainer"], "adapter", kind=ModelKind.sft,
                        config={"architecture": "lora_adapter", "base_model": "../base", "tokenizer": "gpt2"})
    job_id = make_job(session, users["trainer"], status=JobStatus.failed, input_model_id=base)

    response = client.delete(f"/api/models/{base}", auth=ADMIN)
    assert response.status_code == 409
    detail = response.json()["detail"]
    for needed in (f"model #{child} 'child'", f"model #{adapter} 'adapter' (a LoRA adapter", f"job #{job_id}"):
        assert needed in detail, detail
    assert count(session, Model) == 3 and (api_settings.data_dir / "models" / "base").is_dir()

    for model_id in (child, adapter):
        assert client.delete(f"/api/models/{model_id}", auth=TRAINER).status_code == 204
    assert client.delete(f"/api/jobs/{job_id}", auth=TRAINER).status_code == 204
    assert client.delete(f"/api/models/{base}", auth=TRAINER).status_code == 204
    session.expire_all()
    assert count(session, Model) == 0 and not (api_settings.data_dir / "models" / "base").exists()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_model_named_by_a_queued_job_beyond_its_input_is_not_deleted(client: TestClient, session: Session, users,
                                                                         api_settings):
    first = add_model(session, api_settings, users["trainer"], "first")
    second = add_model(session, api_settings, users["trainer"], "second")
    third = add_model(session, api_settings, users["trainer"], "third")
    evaluate = make_job(session, users["trainer"], status=JobStatus.queued)
    generate = make_job(session, users["trainer"], status=JobStatus.queued)
    session.get(Job, evaluate).params = {"model_ids": [first, second], "dataset_id": 1}
    session.get(Job, generate).params = {"model_id": first, "model_id_b": third, "dataset_id": 1}
    session.commit()

    for model_id, jobs_naming_it in ((second, [evaluate]), (third, [generate])):
        response = client.delete(f"/api/models/{model_id}", auth=TRAINER)
        assert response.status_code == 409, response.text
        assert [f"job #{job_id}" in response.json()["detail"] for job_id in (evaluate, generate)] == [
            job_id in jobs_naming_it for job_id in (evaluate, generate)]
    assert count(session, Model) == 3
    assert client.post(f"/api/jobs/{evaluate}/cancel", auth=TRAINER).status_code == 200
    assert client.delete(f"/api/jobs/{evaluate}", auth=TRAINER).status_code == 204
    assert client.delete(f"/api/models/{second}", auth=TRAINER).status_code == 204


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_models_are_renamed_and_deleted_by_their_owner_or_an_admin_only(client: TestClient, session: Session, users,
                                                                        api_settings):
    admins = add_model(session, api_settings, users["admin"], "admins")
    assert client.patch(f"/api/models/{admins}", auth=TRAINER, json={"name": "taken"}).status_code == 403
    assert client.delete(f"/api/models/{admins}", auth=TRAINER).status_code == 403
    blank = client.patch(f"/api/models/{admins}", auth=ADMIN, json={"name": "   "})
    assert blank.status_code == 422 and "empty" in blank.json()["detail"][0]["msg"]
    session.expire_all()
    assert session.get(Model, admins).name == "admins"
    assert client.patch(f"/api/models/{admins}", auth=ADMIN, json={"name": "gpt2-small"}).json()["name"] == "gpt2-small"

    trainers = add_model(session, api_settings, users["trainer"], "trainers")
    assert client.patch(f"/api/models/{trainers}", auth=TRAINER, json={"name": "mine"}).status_code == 200
    assert client.delete(f"/api/models/{trainers}", auth=ADMIN).status_code == 204
    assert client.delete(f"/api/models/{trainers}", auth=ADMIN).status_code == 404
