"""The REST API end to end: the real app (`web.app.create_app`), a real database (SQLite and
PostgreSQL through the `database_url` fixture), real Redis as the broker for enqueues (no worker).

What is checked: authentication everywhere but /api/health (401 + WWW-Authenticate), roles
(labelers get 403 on upload and submit), dataset upload (stats; a validation error naming the line;
nothing stored on error, neither row nor file; size limit 413; a user file name never becomes a
path), job submission (validation messages naming the field; nothing stored), job list, detail,
logs, metrics, cancel and resume, the models list, the OpenAPI page and the UI login.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Dataset, Job, JobLog, JobStatus, Metric, Model, ModelKind, User
from db.settings import Settings
from db.users import hash_password
from tests.conftest import ADMIN, LABELER, TRAINER
from tests.support.records import CORPUS, pretrain_params, upload
from web.app import create_app
from web.auth import gradio_login


def stored_files(settings: Settings) -> list[Path]:
    """Every file under the datasets directory and the upload temp directory."""
    roots = [settings.data_dir / "datasets", settings.data_dir / "tmp"]
    return sorted(p for root in roots if root.exists() for p in root.rglob("*") if p.is_file())


def count(session: Session, model: type) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


# ----------------------------------------------------------------------------- auth


def test_health_needs_no_login_and_shows_the_parts_to_admins_only(client: TestClient):
    response = client.get("/api/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    response = client.get("/api/health", auth=ADMIN)
    assert response.status_code == 200
    assert {key: response.json()[key] for key in ("status", "database", "broker")} == {
        "status": "ok", "database": "ok", "broker": "ok"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_health_reports_an_unreachable_database(api_settings: Settings):
    # Port 1 on localhost: nothing listens there, so the connection is refused at once.
    broken = dataclasses.replace(api_settings, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TestClient(create_app(broken)) as client:
        response = client.get("/api/health")
    # Nobody can be authenticated without the database: everyone gets the short answer.
    assert (response.status_code, response.json()) == (503, {"status": "error"})


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/datasets"), ("POST", "/api/datasets"), ("GET", "/api/datasets/1"),
    ("GET", "/api/jobs"), ("POST", "/api/jobs"), ("GET", "/api/jobs/1"), ("GET", "/api/jobs/1/metrics"),
    ("GET", "/api/jobs/1/logs"), ("POST", "/api/jobs/1/cancel"), ("POST", "/api/jobs/1/resume"),
    ("GET", "/api/models"), ("POST", "/api/estimates/pretrain"),
])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # auth does not depend on the backend
def test_every_route_but_health_needs_credentials(client: TestClient, method: str, path: str):
    anonymous = client.request(method, path)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert "authentication required" in anonymous.json()["detail"]

    wrong = client.request(method, path, auth=(TRAINER[0], "not-the-password"))
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "wrong user name or password"
    unknown = client.request(method, path, auth=("nobody", "whatever-password"))
    assert unknown.status_code == 401


def test_labelers_may_not_read_upload_or_submit(client: TestClient, session: Session, api_settings: Settings):
    # Datasets and jobs are the training team's (tests/web/test_roles.py has the whole list).
    assert client.get("/api/jobs", auth=LABELER).status_code == 403
    assert client.get("/api/datasets", auth=LABELER).status_code == 403

    refused = upload(client, CORPUS, auth=LABELER)
    assert refused.status_code == 403
    assert "labeler" in refused.json()["detail"]
    assert count(session, Dataset) == 0
    assert stored_files(api_settings) == []

    dataset_id = upload(client, CORPUS).json()["id"]
    refused = client.post("/api/jobs", auth=LABELER, json={"kind": "pretrain", "params": pretrain_params(dataset_id)})
    assert refused.status_code == 403
    assert "labeler" in refused.json()["detail"]
    assert count(session, Job) == 0


def test_a_changed_password_is_checked_again(client: TestClient, session: Session, users: dict[str, User]):
    assert client.get("/api/jobs", auth=TRAINER).status_code == 200  # now remembered
    user = session.get(User, users["trainer"].id)
    user.password_hash = hash_password("a-brand-new-password")
    session.commit()
    assert client.get("/api/jobs", auth=TRAINER).status_code == 401
    assert client.get("/api/jobs", auth=(TRAINER[0], "a-brand-new-password")).status_code == 200


# ----------------------------------------------------------------------------- datasets


def test_upload_a_text_corpus(client: TestClient, api_settings: Settings):
    response = upload(client, CORPUS, "notes.txt", name="Notes")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["name"] == "Notes"
    assert dataset["kind"] == "text" and dataset["format"] == "txt"
    assert dataset["original_filename"] == "notes.txt"
    assert dataset["size_bytes"] == len(CORPUS.encode())
    stats = dataset["stats"]
    assert stats["documents"] == 3
    assert stats["duplicates_removed"] == 1
    assert stats["preview"][0].startswith("The first document")
    histogram = stats["length_histogram"]
    assert sum(histogram["counts"]) == 3
    assert len(histogram["edges"]) == len(histogram["counts"]) + 1
    assert histogram["min"] == len("Short third one.")

    stored = api_settings.data_dir / "datasets" / str(dataset["id"]) / "original.txt"
    assert stored.read_text() == CORPUS
    assert stored_files(api_settings) == [stored]  # the upload's temporary copy is gone

    listed = client.get("/api/datasets", auth=TRAINER).json()
    assert [d["id"] for d in listed] == [dataset["id"]]
    assert client.get(f"/api/datasets/{dataset['id']}", auth=TRAINER).json()["name"] == "Notes"
    assert client.get("/api/datasets/999", auth=TRAINER).status_code == 404


def test_an_invalid_corpus_names_the_line_and_stores_nothing(client: TestClient, session: Session,
                                                              api_settings: Settings):
    lines = [json.dumps({"text": "a fine first document"}), "{not json", json.dumps({"text": "third"})]
    response = upload(client, "\n".join(lines) + "\n", "web-crawl.jsonl")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "file"]
    assert "web-crawl.jsonl" in error["msg"] and "line 2" in error["msg"] and "invalid JSON" in error["msg"]
    assert count(session, Dataset) == 0
    assert stored_files(api_settings) == []
    assert [p.name for p in (api_settings.data_dir / "datasets").iterdir()] == []  # no staging leftovers


def test_wrong_extension_and_kind_are_refused(client: TestClient, session: Session, api_settings: Settings):
    response = upload(client, CORPUS, "corpus.exe")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]
    assert "unsupported extension" in response.json()["detail"][0]["msg"]

    response = upload(client, CORPUS, kind="poetry")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "kind"]
    assert count(session, Dataset) == 0
    assert stored_files(api_settings) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the limit does not depend on the backend
def test_uploads_over_the_size_limit_get_413_and_store_nothing(users, api_settings: Settings, session: Session):
    small_limit = dataclasses.replace(api_settings, max_upload_mb=1)
    limit = small_limit.max_upload_bytes
    with TestClient(create_app(small_limit)) as client:
        # Far over: refused from the Content-Length header, before the body is read.
        response = upload(client, b"word " * (2 * limit // 5))
        assert response.status_code == 413
        assert "limit is 1 MB" in response.json()["detail"]
        # Just over (within the multipart allowance): refused while the body is copied.
        response = upload(client, b"a" * (limit + 10))
        assert response.status_code == 413
        assert "limit is 1 MB" in response.json()["detail"]
        # At the limit: accepted.
        at_limit = (b"x" * 99 + b"\n\n") * (limit // 101)
        assert upload(client, at_limit).status_code == 201
    assert count(session, Dataset) == 1
    assert len(stored_files(api_settings)) == 1


@pytest.mark.parametrize("filename", ["../../escaped.txt", "..\\..\\escaped.txt", "/etc/escaped.txt",
                                      "sub/../../escaped.txt"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_file_name_never_becomes_a_path(client: TestClient, api_settings: Settings, tmp_path: Path,
                                          filename: str):
    response = upload(client, CORPUS, filename)
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["original_filename"] == "escaped.txt"
    assert (api_settings.data_dir / "datasets" / str(dataset["id"]) / "original.txt").is_file()
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not Path("/etc/escaped.txt").exists()


# ----------------------------------------------------------------------------- jobs


def test_job_params_are_validated_and_nothing_is_stored(client: TestClient, session: Session):
    dataset_id = upload(client, CORPUS).json()["id"]

    response = client.post("/api/jobs", auth=TRAINER, json={"kind": "pretrain", "params": pretrain_params(424242)})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "params", "dataset_id"]
    assert "dataset_id" in error["msg"] and "424242" in error["msg"]

    response = client.post("/api/jobs", auth=TRAINER,
                           json={"kind": "pretrain", "params": pretrain_params(dataset_id, max_steps=0)})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "params", "max_steps"]
    assert "max_steps" in error["msg"]

    response = client.post("/api/jobs", auth=TRAINER,
                           json={"kind": "pretrain", "params": pretrain_params(dataset_id, max_steps="many")})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "params", "max_steps"]

    response = client.post("/api/jobs", auth=TRAINER, json={"kind": "painting", "params": {}})
    assert response.status_code == 422  # pydantic: not a job kind
    assert response.json()["detail"][0]["loc"] == ["body", "kind"]

    assert count(session, Job) == 0
    assert count(session, JobLog) == 0


def test_submit_list_detail_cancel_and_resume_a_job(client: TestClient, session: Session, users):
    dataset_id = upload(client, CORPUS).json()["id"]
    response = client.post("/api/jobs", auth=TRAINER,
                           json={"kind": "pretrain", "params": pretrain_params(dataset_id), "priority": 3})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued" and job["kind"] == "pretrain" and job["priority"] == 3
    assert job["owner"] == TRAINER[0] and job["dataset_id"] == dataset_id
    assert job["params"]["max_steps"] == 5 and job["metrics"] == {}
    job_id = job["id"]

    listed = client.get("/api/jobs", auth=ADMIN).json()
    assert [j["id"] for j in listed] == [job_id]
    assert client.get("/api/jobs?status=queued", auth=TRAINER).json()[0]["id"] == job_id
    assert client.get("/api/jobs?status=running", auth=TRAINER).json() == []
    assert client.get("/api/jobs?status=sleeping", auth=TRAINER).status_code == 422

    # A worker's records, written the way the worker writes them.
    session.add_all([Metric(job_id=job_id, step=1, name="loss", value=9.5),
                     Metric(job_id=job_id, step=2, name="loss", value=8.25),
                     Metric(job_id=job_id, step=2, name="val_loss", value=8.5)])
    session.commit()
    detail = client.get(f"/api/jobs/{job_id}", auth=TRAINER).json()
    assert detail["metrics"] == {"loss": 8.25, "val_loss": 8.5}
    assert detail["metric_steps"] == {"loss": 2, "val_loss": 2}
    metrics = client.get(f"/api/jobs/{job_id}/metrics", auth=TRAINER).json()
    assert metrics == [{"step": 1, "name": "loss", "value": 9.5}, {"step": 2, "name": "loss", "value": 8.25},
                       {"step": 2, "name": "val_loss", "value": 8.5}]
    assert len(client.get(f"/api/jobs/{job_id}/metrics?name=loss&after_step=1", auth=TRAINER).json()) == 1

    logs = client.get(f"/api/jobs/{job_id}/logs", auth=TRAINER).json()
    assert logs and "queued" in logs[0]["line"]
    assert not any("unreachable" in line["line"] for line in logs)  # the enqueue reached Redis
    assert client.get(f"/api/jobs/{job_id}/logs?after_id={logs[-1]['id']}", auth=TRAINER).json() == []

    assert client.post(f"/api/jobs/{job_id}/cancel", auth=LABELER).status_code == 403
    cancelled = client.post(f"/api/jobs/{job_id}/cancel", auth=TRAINER)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = client.post(f"/api/jobs/{job_id}/cancel", auth=TRAINER)
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]

    resumed = client.post(f"/api/jobs/{job_id}/resume", auth=ADMIN)
    assert resumed.status_code == 200
    assert resumed.json()["status"] == "queued"
    assert client.post(f"/api/jobs/{job_id}/resume", auth=ADMIN).status_code == 409
    session.expire_all()
    assert session.get(Job, job_id).status == JobStatus.queued


@pytest.mark.parametrize("path", ["/api/jobs/999", "/api/jobs/999/metrics", "/api/jobs/999/logs"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_unknown_job_ids_are_404(client: TestClient, path: str):
    response = client.get(path, auth=TRAINER)
    assert response.status_code == 404
    assert response.json()["detail"] == "job 999 does not exist"
    for action in ("cancel", "resume"):
        assert client.post(f"/api/jobs/999/{action}", auth=TRAINER).status_code == 404


# ----------------------------------------------------------------------------- models, estimates, docs, UI


def test_models_list_shows_lineage(client: TestClient, session: Session, users):
    base = Model(name="base-1", kind=ModelKind.base, tokenizer="gpt2", path="runs/1/model",
                 config={"n_layer": 2}, owner_id=users["trainer"].id)
    session.add(base)
    session.flush()
    session.add(Model(name="chat-1", kind=ModelKind.sft, tokenizer="gpt2", path="runs/2/adapter",
                      parent_model_id=base.id))
    session.commit()
    models = client.get("/api/models", auth=TRAINER).json()
    assert [(m["name"], m["kind"], m["tokenizer"], m["parent_model_id"]) for m in models] == [
        ("chat-1", "sft", "gpt2", base.id), ("base-1", "base", "gpt2", None)]
    # Labelers: the chat models only, not by name (blind labelers, on by default).
    assert [m["name"] for m in client.get("/api/models", auth=LABELER).json()] == [f"model #{models[0]['id']}"]
    assert set(models[0]) >= {"id", "name", "kind", "tokenizer", "parent_model_id", "job_id"}
    assert [m["name"] for m in client.get("/api/models?kind=base", auth=TRAINER).json()] == ["base-1"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_pretrain_estimate(client: TestClient):
    response = client.post("/api/estimates/pretrain", auth=TRAINER,
                           json={"preset": "tiny", "tokenizer": "gpt2", "batch_size": 4, "block_size": 64,
                                 "grad_accum": 2, "max_steps": 100, "device": "cpu"})
    assert response.status_code == 200, response.text
    estimate = response.json()
    assert estimate["tokens_per_step"] == 4 * 64 * 2
    assert estimate["total_tokens"] == 4 * 64 * 2 * 100
    # tiny: 2 layers x 12 * 64^2 weights + biases/norms, plus the 50304 x 64 tied embedding.
    assert 50304 * 64 < estimate["params_count"] < 50304 * 64 + 200_000
    assert estimate["est_seconds"] > 0 and estimate["device"] == "cpu"
    bad = client.post("/api/estimates/pretrain", auth=TRAINER, json={"preset": "enormous"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "preset"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_openapi_docs_and_ui_login(client: TestClient, api_settings: Settings):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/health", "/api/datasets", "/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/metrics",
            "/api/jobs/{job_id}/logs", "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/resume",
            "/api/models"} <= set(paths)

    # The Gradio UI is mounted at / behind its login form, checked against the users table.
    assert client.get("/").status_code == 200
    assert client.post("/login", data={"username": LABELER[0], "password": "wrong-password"}).status_code == 400
    assert client.post("/login", data={"username": LABELER[0], "password": LABELER[1]}).json() == {"success": True}
    import anyio

    login = gradio_login(api_settings)
    assert anyio.run(login, *TRAINER) is True
    assert anyio.run(login, TRAINER[0], "nope-nope") is False
