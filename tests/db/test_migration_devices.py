"""Migration 0011 (issue 20 item 3): jobs get `devices` (asked) and `assigned_devices` (given at claim); every job
of before keeps its row and asks for one device; down again drops the two columns and keeps the rows."""

from __future__ import annotations

from sqlalchemy import inspect, text

from db.migrate import downgrade, upgrade
from db.session import get_engine


def _job_columns(engine) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns("jobs")}


def test_0011_gives_every_job_one_device_and_goes_back(empty_database_url: str) -> None:
    upgrade(empty_database_url, "0010")
    engine = get_engine(empty_database_url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO jobs (id, kind, status, params, priority, progress, created_at, "
                                "attempts, cancel_requested, resumable) VALUES (1, 'pretrain', 'running', '{}', 0, "
                                "0.5, CURRENT_TIMESTAMP, 1, false, true), (2, 'sft', 'queued', '{}', 3, 0, "
                                "CURRENT_TIMESTAMP, 0, false, true)"))
    upgrade(empty_database_url, "0011")
    engine.dispose()
    assert {"devices", "assigned_devices"} <= _job_columns(engine)
    with engine.begin() as connection:
        rows = connection.execute(text("SELECT id, kind, status, devices, assigned_devices FROM jobs ORDER BY id")).all()
        assert [tuple(row) for row in rows] == [(1, "pretrain", "running", 1, None), (2, "sft", "queued", 1, None)]
        connection.execute(text("UPDATE jobs SET devices = 2, assigned_devices = '[\"0\", \"1\"]' WHERE id = 2"))
    downgrade(empty_database_url, "0010")
    engine.dispose()
    assert not {"devices", "assigned_devices"} & _job_columns(engine)
    with engine.begin() as connection:
        assert connection.execute(text("SELECT id, kind, priority FROM jobs ORDER BY id")).all() == [
            (1, "pretrain", 0), (2, "sft", 3)]
