"""A person's mistake gets a 4xx naming the field, never a 500: ids beyond 64 bits (SQLite and
PostgreSQL), wrong types and huge numbers in estimates and job params, devices that cannot exist; and a
busy database answers 503 with Retry-After, quickly."""

from __future__ import annotations

import sqlite3
import time

from typing import Annotated

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.engine import make_url

from db.models import Dataset, Job
from db.settings import Settings
from tests.conftest import TRAINER
from web.auth import get_db_session

HUGE_IDS = [2**31, 2**63, 2**64, 10**30]  # 2**31: beyond PostgreSQL's INTEGER


def loc_of(answer) -> list:
    return answer.json()["detail"][0]["loc"]


def job_count(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Job))


@pytest.mark.parametrize("huge", HUGE_IDS)
def test_ids_beyond_64_bits_in_paths_are_refused_not_500(client: TestClient, huge: int):
    for path, field in ((f"/api/jobs/{huge}", "job_id"), (f"/api/jobs/{huge}/metrics", "job_id"),
                        (f"/api/jobs/{huge}/logs", "job_id"), (f"/api/models/{huge}", "model_id"),
                        (f"/api/models/{huge}/download", "model_id")):
        answer = client.get(path, auth=TRAINER)
        assert answer.status_code == 422, (path, answer.text)
        assert loc_of(answer) == ["path", field]
    answer = client.post(f"/api/jobs/{huge}/cancel", auth=TRAINER)
    assert answer.status_code == 422 and loc_of(answer) == ["path", "job_id"]


@pytest.mark.subprocess
def test_a_route_without_bounded_ids_answers_422_not_500(client: TestClient):
    # The net in web/api/errors.py, for a route that takes a plain int: the driver's overflow (SQLite
    # beyond 64 bits, PostgreSQL beyond its 32-bit INTEGER) is the person's mistake, not the server's.
    # Every shipped route bounds its ids (web/api/ids.py), so the test mounts one that does not.
    def unbounded(dataset_id: int, session: Annotated[Session, Depends(get_db_session)]) -> dict:
        return {"found": session.get(Dataset, dataset_id) is not None}

    client.app.add_api_route("/api/unbounded-probe/{dataset_id}", unbounded, methods=["GET"])
    client.app.router.routes.insert(0, client.app.router.routes.pop())  # ahead of the UI mounted at "/"
    assert client.get("/api/unbounded-probe/1").json() == {"found": False}
    huge_ids = (2**64, 10**30) if client.app.state.settings.database_url.startswith("sqlite") else (2**31, 2**64)
    for huge in huge_ids:
        answer = client.get(f"/api/unbounded-probe/{huge}")
        assert answer.status_code == 422, answer.text
        assert "too large" in answer.json()["detail"][0]["msg"]


def test_numbers_beyond_64_bits_in_queries_are_refused(client: TestClient):
    for query, field in (("after_id", "after_id"), ("after_step", "after_step")):
        answer = client.get(f"/api/jobs/1/{'logs' if field == 'after_id' else 'metrics'}?{query}={2**63}",
                            auth=TRAINER)
        assert answer.status_code == 422, answer.text
        assert loc_of(answer) == ["query", field]


@pytest.mark.parametrize("field", ["dataset_id", "max_steps", "seed"])
def test_huge_whole_numbers_in_job_params_are_refused(client: TestClient, session, field: str):
    before = job_count(session)
    for huge in (2**63, 2**64, 1e300):
        answer = client.post("/api/jobs", auth=TRAINER, json={"kind": "pretrain", "params": {"dataset_id": 1,
                                                                                             field: huge}})
        assert answer.status_code == 422, answer.text
        assert loc_of(answer) == ["body", "params", field]
        assert "at most" in answer.json()["detail"][0]["msg"]
    assert job_count(session) == before


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_estimate_refuses_wrong_types_and_huge_numbers(client: TestClient):
    cases = [({"preset": ["tiny"]}, "preset"), ({"preset": {"a": 1}}, "preset"), ({"tokenizer": [1]}, "tokenizer"),
             ({"batch_size": 10**400}, "batch_size"), ({"block_size": 2**63}, "block_size"),
             ({"max_steps": [5]}, "max_steps"), ({"grad_accum": "many"}, "grad_accum"), ({"batch_size": True}, "batch_size"),
             ({"device": ["cuda"]}, "device"), ({"device": "cuda:x"}, "device"), ({"dtype": 5}, "dtype")]
    for params, field in cases:
        answer = client.post("/api/estimates/pretrain", auth=TRAINER, json=params)
        assert answer.status_code == 422, (params, answer.text)
        assert loc_of(answer) == ["body", field], params
    assert client.post("/api/estimates/pretrain", auth=TRAINER, json={"batch_size": 2}).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_impossible_devices_are_refused_at_submit(client: TestClient):
    for device in ("cuda:x", "gpu", "cuda:-1", "cuda:99999999999999999999", "tpu:0", "cuda:"):
        answer = client.post("/api/jobs", auth=TRAINER, json={"kind": "pretrain",
                                                              "params": {"dataset_id": 1, "device": device}})
        assert answer.status_code == 422, (device, answer.text)
        assert loc_of(answer) == ["body", "params", "device"]
        assert "cuda:N" in answer.json()["detail"][0]["msg"]


# ----------------------------------------------------------------------------- a busy database


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_locked_sqlite_database_answers_503_quickly(client: TestClient, api_settings: Settings, session,
                                                       users: dict):
    job = Job(kind="pretrain", params={}, owner_id=users["trainer"].id)
    session.add(job)
    session.commit()
    path = make_url(api_settings.database_url).database
    locker = sqlite3.connect(path, timeout=1)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        answer = client.patch(f"/api/jobs/{job.id}", auth=TRAINER, json={"name": "renamed"})
        elapsed = time.monotonic() - started
    finally:
        locker.rollback()
        locker.close()
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["Retry-After"]) >= 1
    assert "the database is busy" in answer.json()["detail"]
    assert elapsed < 15
    # Once the lock is gone, the same request is answered on its merits.
    assert client.get("/api/jobs", auth=TRAINER).status_code == 200


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_locked_postgresql_row_answers_503_quickly(client: TestClient, api_settings: Settings, session,
                                                     users: dict):
    import psycopg

    job = Job(kind="pretrain", params={}, owner_id=users["trainer"].id)
    session.add(job)
    session.commit()
    url = make_url(api_settings.database_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database) as locker:
        locker.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job.id,))
        started = time.monotonic()
        answer = client.patch(f"/api/jobs/{job.id}", auth=TRAINER, json={"name": "renamed"})
        elapsed = time.monotonic() - started
        locker.rollback()
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] and "the database is busy" in answer.json()["detail"]
    assert elapsed < 15
