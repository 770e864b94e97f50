"""The database layer on SQLite and PostgreSQL: migrations, every table, constraints, the job
queue order, concurrent writers, engines across fork, and user accounts.

Tests that take ``database_url``/``session``/``empty_database_url`` run once per backend
(see tests/conftest.py).
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, func, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

import db.users
from db.migrate import current_revision, downgrade, head_revision, is_up_to_date, upgrade
from db.models import (
    AnswerFeedback,
    ArenaBattle,
    Base,
    Comparison,
    Completion,
    Dataset,
    DatasetKind,
    Job,
    JobLog,
    JobNode,
    JobStatus,
    Metric,
    Model,
    ModelKind,
    Prompt,
    Role,
    User,
)
from db.session import SessionLocal, create_workbench_engine, get_engine, session_scope
from db.users import authenticate, create_user, ensure_admin, hash_password, verify_password
from llm.preference_labels import Label

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- helpers ---------------------------------------------------------------------------------


def _schema_diffs(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def _schema_snapshot(engine: Engine) -> dict[str, Any]:
    """Everything reflection tells about our tables, names of constraints included.

    Alembic's compare ignores CHECK constraints and constraint names; this does not.
    """
    inspector = inspect(engine)
    snapshot: dict[str, Any] = {}
    for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        snapshot[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": sorted(
                (fk["name"], tuple(fk["constrained_columns"]), fk["referred_table"], fk["options"].get("ondelete"))
                for fk in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted((ix["name"], tuple(ix["column_names"]), ix["unique"]) for ix in inspector.get_indexes(table)),
            "unique": sorted((uq["name"], tuple(uq["column_names"])) for uq in inspector.get_unique_constraints(table)),
            "checks": sorted(ck["name"] for ck in inspector.get_check_constraints(table)),
        }
    return snapshot


def _new_user(session: Session, name: str = "ada", role: Role = Role.trainer) -> User:
    user = User(name=name, role=role, password_hash="not-a-hash")
    session.add(user)
    session.flush()
    return user


def _new_job(session: Session, **fields: Any) -> Job:
    job = Job(kind=fields.pop("kind", "pretrain"), **fields)
    session.add(job)
    session.flush()
    return job


# --- migrations ------------------------------------------------------------------------------


def test_upgrade_from_empty_matches_the_models(empty_database_url: str) -> None:
    assert current_revision(empty_database_url) is None
    upgrade(empty_database_url)
    assert current_revision(empty_database_url) == head_revision() == "0016"
    assert is_up_to_date(empty_database_url)

    engine = create_workbench_engine(empty_database_url)
    try:
        assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
        assert _schema_diffs(engine) == []

        # The comparison has teeth: a missing index is reported.
        with engine.begin() as connection:
            connection.execute(text("DROP INDEX ix_metrics_job_name_step"))
        assert [diff[0] for diff in _schema_diffs(engine)] == ["add_index"]
    finally:
        engine.dispose()


def test_migrations_build_the_same_schema_as_create_all(empty_database_url: str) -> None:
    # Constraint names and CHECKs included, which compare_metadata does not look at: the
    # hand-written migration must agree with db.models' naming convention.
    engine = create_workbench_engine(empty_database_url)
    try:
        upgrade(empty_database_url)
        migrated = _schema_snapshot(engine)
        downgrade(empty_database_url, "base")
        assert _schema_snapshot(engine) == {}
        Base.metadata.create_all(engine)
        assert _schema_snapshot(engine) == migrated
        assert "ck_jobs_status" in migrated["jobs"]["checks"]
        assert ("fk_models_job_id_jobs", ("job_id",), "jobs", None) in migrated["models"]["foreign_keys"]
    finally:
        engine.dispose()


def test_concurrent_upgrades_do_not_collide(empty_database_url: str) -> None:
    # The web app and a worker starting together both call upgrade(); the lock makes the
    # second wait and then find nothing to do.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(upgrade, empty_database_url) for _ in range(2)]:
            future.result()
    assert current_revision(empty_database_url) == head_revision()


@pytest.mark.subprocess
@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_migrate_module_runs_from_the_command_line(empty_database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "WORKBENCH_DATABASE_URL": empty_database_url, "WORKBENCH_DATA_DIR": str(tmp_path)}
    upgraded = subprocess.run(
        [sys.executable, "-m", "db.migrate"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"database at {head_revision()}" in upgraded.stdout
    assert current_revision(empty_database_url) == head_revision()


# --- engines and sessions --------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(engine: Engine) -> None:
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


@pytest.mark.subprocess
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgres_pool_survives_a_killed_connection(engine: Engine) -> None:
    # pool_pre_ping: a pooled connection the server dropped (restart, idle timeout) is
    # replaced on checkout instead of failing the next request.
    with engine.connect() as connection:
        backend_pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with create_workbench_engine(engine.url.render_as_string(hide_password=False)).connect() as killer:
        assert killer.exec_driver_sql(f"SELECT pg_terminate_backend({backend_pid})").scalar() is True
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != backend_pid


def test_get_engine_is_cached_per_url(database_url: str) -> None:
    assert get_engine(database_url) is get_engine(database_url)
    if database_url.startswith("postgresql+psycopg://"):
        # postgresql:// means the same database and gets the same engine.
        assert get_engine(database_url.replace("postgresql+psycopg://", "postgresql://")) is get_engine(database_url)


def test_session_scope_commits_on_success_and_rolls_back_on_error(database_url: str) -> None:
    with session_scope(database_url) as session:
        _new_user(session, "kept")
    with pytest.raises(RuntimeError, match="boom"):
        with session_scope(database_url) as session:
            _new_user(session, "discarded")
            raise RuntimeError("boom")
    with session_scope(database_url) as session:
        assert session.scalars(select(User.name)).all() == ["kept"]


def test_objects_stay_readable_after_commit(database_url: str) -> None:
    with session_scope(database_url) as session:
        job = _new_job(session, params={"lr": 3e-4})
    # expire_on_commit=False: no reload (and no error) after the session is gone.
    assert job.params == {"lr": 3e-4} and job.status is JobStatus.queued


# --- every table, round trip -----------------------------------------------------------------

UTC_PLUS_2 = timezone(timedelta(hours=2))


def test_every_table_round_trips(session: Session, database_url: str) -> None:
    owner = _new_user(session, "ada", Role.trainer)
    annotator = _new_user(session, "grace", Role.labeler)
    dataset_stats = {
        "documents": 3, "bytes": 2**40, "ratio": 0.75, "valid": True, "missing": None,
        "languages": {"en": 0.98, "fr": 0.02}, "sample": ["ünïcødé ✓ 中文", "<|im_start|>"],
    }
    dataset = Dataset(
        name="tiny shakespeare", kind=DatasetKind.text, format="txt", path="datasets/1/data.txt",
        original_filename="../shakespeare (1).txt", size_bytes=1_115_394, stats=dataset_stats, owner=owner,
    )
    base_model = Model(
        name="base-tiny", kind=ModelKind.base, tokenizer="gpt2",
        config={"n_layer": 2, "n_embd": 64, "dropout": 0.0, "bias": False}, path="runs/1/model", owner_id=owner.id,
    )
    session.add_all([dataset, base_model])
    session.flush()
    started = datetime(2026, 1, 2, 12, 30, 15, 123456, tzinfo=UTC_PLUS_2)
    pretrain_job = _new_job(
        session, kind="pretrain", status=JobStatus.succeeded, params={"preset": "tiny", "steps": [1, 2, 3]},
        priority=3, progress=1.0, started_at=started, finished_at=started + timedelta(minutes=5),
        heartbeat_at=started + timedelta(minutes=4), worker_host="gpu-1", attempts=1, run_dir="runs/1",
        dataset=dataset, output_model=base_model, owner=owner,
    )
    base_model.job_id = pretrain_job.id  # models <-> jobs point at each other
    sft_model = Model(name="assistant", kind=ModelKind.sft, tokenizer="gpt2", config={}, path="runs/2/adapter",
                      parent=base_model)
    session.add(sft_model)
    session.flush()
    sft_job = _new_job(session, kind="sft", input_model=base_model, output_model=sft_model,
                       cancel_requested=True, error="Traceback …")
    sft_model.job_id = sft_job.id
    session.add_all([
        Metric(job_id=pretrain_job.id, step=10, name="loss", value=3.25),
        Metric(job_id=pretrain_job.id, step=10, name="val_bpb", value=1.5),
        JobLog(job_id=pretrain_job.id, line="step 10 | loss 3.2500"),
    ])
    prompt = Prompt(text="Why is the sky blue?", dataset_id=dataset.id)
    session.add(prompt)
    session.flush()
    completion_a = Completion(prompt=prompt, model_id=base_model.id, job_id=sft_job.id, text="Rayleigh scattering.",
                              sampling={"temperature": 0.8, "top_k": 50, "top_p": None, "seed": 1234})
    completion_b = Completion(prompt=prompt, model_id=sft_model.id, text="Because.", sampling={"temperature": 0.0})
    session.add_all([completion_a, completion_b])
    session.flush()
    session.add(Comparison(prompt_id=prompt.id, completion_a_id=completion_a.id, completion_b_id=completion_b.id,
                           label=Label.both_bad, annotator_id=annotator.id, source="arena", time_spent_s=4.5))
    session.commit()

    with SessionLocal(database_url) as fresh:  # nothing from the identity map: real reads
        ada = fresh.scalars(select(User).where(User.name == "ada")).one()
        assert ada.role is Role.trainer and ada.created_at.utcoffset() == timedelta(0)

        loaded_dataset = fresh.scalars(select(Dataset)).one()
        assert loaded_dataset.kind is DatasetKind.text
        assert loaded_dataset.stats == dataset_stats
        assert loaded_dataset.owner is not None and loaded_dataset.owner.name == "ada"
        assert loaded_dataset.original_filename == "../shakespeare (1).txt"

        job = fresh.get(Job, pretrain_job.id)
        assert job is not None
        assert (job.kind, job.status) == ("pretrain", JobStatus.succeeded)
        assert job.status.finished
        assert job.params == {"preset": "tiny", "steps": [1, 2, 3]}
        assert (job.priority, job.progress, job.attempts, job.worker_host) == (3, 1.0, 1, "gpu-1")
        # Stored as UTC, returned aware, the same instant on both backends.
        assert job.started_at == started and job.started_at.utcoffset() == timedelta(0)
        assert job.finished_at - job.started_at == timedelta(minutes=5)
        assert job.dataset is not None and job.dataset.name == "tiny shakespeare"
        assert job.output_model is not None and job.output_model.job_id == job.id
        assert job.cancel_requested is False and job.error is None

        other_job = fresh.get(Job, sft_job.id)
        assert other_job is not None and other_job.cancel_requested is True and other_job.error == "Traceback …"
        assert other_job.status is JobStatus.queued and other_job.progress == 0.0 and other_job.params == {}
        assert other_job.input_model is not None and other_job.input_model.name == "base-tiny"

        assistant = fresh.scalars(select(Model).where(Model.kind == ModelKind.sft)).one()
        assert assistant.parent is not None and assistant.parent.config["n_embd"] == 64
        assert assistant.job_id == sft_job.id

        metrics = fresh.execute(select(Metric.name, Metric.value).order_by(Metric.name)).all()
        assert metrics == [("loss", 3.25), ("val_bpb", 1.5)]
        assert fresh.scalars(select(JobLog.line)).all() == ["step 10 | loss 3.2500"]

        loaded_prompt = fresh.scalars(select(Prompt)).one()
        assert loaded_prompt.dataset_id == dataset.id
        completions = fresh.scalars(select(Completion).order_by(Completion.id)).all()
        assert [c.sampling for c in completions] == [
            {"temperature": 0.8, "top_k": 50, "top_p": None, "seed": 1234}, {"temperature": 0.0},
        ]
        assert completions[0].prompt.text == "Why is the sky blue?"

        comparison = fresh.scalars(select(Comparison)).one()
        assert comparison.label is Label.both_bad and comparison.source == "arena"
        assert (comparison.completion_a_id, comparison.completion_b_id) == (completion_a.id, completion_b.id)
        assert comparison.time_spent_s == 4.5

        # Enums are stored as their values, readable in plain SQL.
        assert fresh.execute(text("SELECT status FROM jobs WHERE id = :id"), {"id": job.id}).scalar() == "succeeded"

        # Update, then delete.
        job.params = {**job.params, "resumed": True}
        job.status = JobStatus.running
        fresh.delete(comparison)
        fresh.commit()

    with SessionLocal(database_url) as check:
        job = check.get(Job, pretrain_job.id)
        assert job is not None and job.status is JobStatus.running and job.params["resumed"] is True
        assert check.scalar(select(func.count()).select_from(Comparison)) == 0


def test_naive_datetimes_are_taken_as_utc(session: Session, database_url: str) -> None:
    job = _new_job(session, heartbeat_at=datetime(2026, 3, 4, 5, 6, 7))
    session.commit()
    with SessionLocal(database_url) as fresh:
        loaded = fresh.get(Job, job.id)
        assert loaded is not None and loaded.heartbeat_at == datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)

        # The reaper's comparison in SQL, with a cutoff given in another zone: 07:10+02:00 is
        # 05:10 UTC (after the heartbeat), 07:00+02:00 is 05:00 UTC (before it). SQLite
        # compares text, so this holds only because every value is stored in UTC.
        def stale_before(cutoff: datetime) -> list[int]:
            return list(fresh.scalars(select(Job.id).where(Job.heartbeat_at < cutoff)))

        assert stale_before(datetime(2026, 3, 4, 7, 10, tzinfo=UTC_PLUS_2)) == [job.id]
        assert stale_before(datetime(2026, 3, 4, 7, 0, tzinfo=UTC_PLUS_2)) == []


def test_deleting_a_job_cascades_to_its_metrics_and_logs(session: Session) -> None:
    job = _new_job(session)
    kept = _new_job(session)
    session.add_all([
        Metric(job_id=job.id, step=1, name="loss", value=1.0),
        JobLog(job_id=job.id, line="hello"),
        Metric(job_id=kept.id, step=1, name="loss", value=2.0),
    ])
    session.commit()
    session.delete(job)
    session.commit()
    assert session.scalars(select(Metric.job_id)).all() == [kept.id]
    assert session.scalar(select(func.count()).select_from(JobLog)) == 0


# --- constraints -----------------------------------------------------------------------------


def test_orm_refuses_a_string_outside_the_enum(session: Session) -> None:
    session.add(Model(name="m", kind="bogus", tokenizer="gpt2", path="p"))  # type: ignore[arg-type]
    with pytest.raises(StatementError, match="bogus") as raised:
        session.flush()
    assert isinstance(raised.value.orig, LookupError)  # refused in Python, before any SQL


def test_a_job_kind_is_any_name_to_the_database(session: Session, engine: Engine) -> None:
    # The registry (worker.kinds) says which kinds exist and submitting checks it: a new kind needs no migration.
    job = _new_job(session, kind="a_kind_from_next_year")
    session.commit()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT kind FROM jobs WHERE id = :id"), {"id": job.id}).scalar_one() \
            == "a_kind_from_next_year"


ENUM_COLUMNS = [("users", "role"), ("datasets", "kind"), ("models", "kind"), ("jobs", "status"),
                ("comparisons", "label")]


def test_database_refuses_a_value_outside_the_enum(session: Session, engine: Engine) -> None:
    # Raw SQL bypasses the ORM's check; the CHECK constraints still hold. One row per table.
    user = _new_user(session)
    dataset = Dataset(name="d", kind=DatasetKind.chat, format="jsonl", path="p", original_filename="f", size_bytes=1)
    model = Model(name="m", kind=ModelKind.base, tokenizer="gpt2", path="p")
    prompt = Prompt(text="p")
    session.add_all([dataset, model, prompt])
    _new_job(session)
    session.flush()
    first = Completion(prompt_id=prompt.id, text="a")
    second = Completion(prompt_id=prompt.id, text="b")
    session.add_all([first, second])
    session.flush()
    session.add(Comparison(prompt_id=prompt.id, completion_a_id=first.id, completion_b_id=second.id,
                           label=Label.a, annotator_id=user.id))
    session.commit()

    for table, column in ENUM_COLUMNS:
        with pytest.raises(IntegrityError, match=f"ck_{table}_{column}|CHECK constraint failed"):
            with engine.begin() as connection:
                connection.execute(text(f"UPDATE {table} SET {column} = 'bogus'"))
        with engine.connect() as connection:
            assert connection.execute(text(f"SELECT {column} FROM {table}")).scalar_one() != "bogus"


def test_foreign_keys_are_enforced(session: Session) -> None:
    session.add(Metric(job_id=424242, step=0, name="loss", value=1.0))
    with pytest.raises(IntegrityError):
        session.flush()


def test_a_completion_cannot_be_compared_with_itself(session: Session) -> None:
    prompt = Prompt(text="p")
    session.add(prompt)
    session.flush()
    completion = Completion(prompt_id=prompt.id, text="a")
    session.add(completion)
    session.flush()
    session.add(Comparison(prompt_id=prompt.id, completion_a_id=completion.id, completion_b_id=completion.id,
                           label=Label.tie))
    with pytest.raises(IntegrityError):
        session.flush()


def test_user_names_are_unique(session: Session) -> None:
    _new_user(session, "ada")
    session.add(User(name="ada", role=Role.admin, password_hash="x"))
    with pytest.raises(IntegrityError):
        session.flush()


def _dataset(session: Session, sha: str | None, kind: DatasetKind = DatasetKind.text) -> Dataset:
    row = Dataset(name="d", kind=kind, format="txt", path="datasets/x/original.txt", original_filename="x.txt",
                  size_bytes=1, content_sha256=sha)
    session.add(row)
    session.flush()
    return row


def test_one_dataset_per_file_and_kind(session: Session) -> None:
    first = _dataset(session, "a" * 64)
    _dataset(session, "a" * 64, DatasetKind.prompts)  # the same bytes as another kind is another dataset
    _dataset(session, None)
    _dataset(session, None)  # rows stored before hashing: NULLs never collide
    session.commit()
    with pytest.raises(IntegrityError):
        _dataset(session, "a" * 64)
    session.rollback()
    assert session.get(Dataset, first.id) is not None


def test_one_prompt_per_dataset_and_text(session: Session) -> None:
    from db.models import prompt_key_sha256

    dataset = _dataset(session, None)
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "p"}]
    for text, messages in (("p", None), ("p", chat), ("q" * 10_000, None)):  # a long text is fine: it is hashed
        session.add(Prompt(text=text, messages=messages, dataset_id=dataset.id,
                           key_sha256=prompt_key_sha256(text, messages)))
    session.add_all([Prompt(text="p"), Prompt(text="p")])  # prompts of no dataset (the arena's) may repeat
    session.commit()
    session.add(Prompt(text="p", dataset_id=dataset.id, key_sha256=prompt_key_sha256("p", None)))
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()


def test_models_are_in_the_arena_unless_taken_out(session: Session) -> None:
    model = Model(name="m", kind=ModelKind.base, tokenizer="gpt2", path="models/m")
    session.add(model)
    session.commit()
    assert model.in_arena is True


def test_0004_keeps_the_oldest_of_what_a_race_stored_twice(empty_database_url: str) -> None:
    from db.models import prompt_key_sha256

    upgrade(empty_database_url, "0003")
    engine = create_workbench_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            for dataset_id in (1, 2, 3):  # 1 and 2: one file stored twice by a race; 3: the same file as prompts
                kind = "prompts" if dataset_id == 3 else "text"
                connection.execute(text(
                    "INSERT INTO datasets (id, name, kind, format, path, original_filename, size_bytes, stats, "
                    "created_at, content_sha256) VALUES (:id, 'd', :kind, 'txt', 'p', 'f', 1, '{}', "
                    "CURRENT_TIMESTAMP, :sha)"), {"id": dataset_id, "kind": kind, "sha": "b" * 64})
            for prompt_id, messages in ((1, None), (2, None), (3, '[{"role": "user", "content": "p"}]')):
                connection.execute(text("INSERT INTO prompts (id, text, dataset_id, created_at, messages) VALUES "
                                        "(:id, 'p', 1, CURRENT_TIMESTAMP, :messages)"),
                                   {"id": prompt_id, "messages": messages})
            connection.execute(text("INSERT INTO models (id, name, kind, tokenizer, config, path, created_at) "
                                    "VALUES (1, 'm', 'base', 'gpt2', '{}', 'p', CURRENT_TIMESTAMP)"))
        upgrade(empty_database_url)
        with engine.connect() as connection:
            hashes = connection.execute(text("SELECT id, content_sha256 FROM datasets ORDER BY id")).all()
            keys = connection.execute(text("SELECT id, key_sha256 FROM prompts ORDER BY id")).all()
            in_arena = connection.execute(text("SELECT in_arena FROM models")).scalar_one()
        assert hashes == [(1, "b" * 64), (2, None), (3, "b" * 64)]
        conversation = [{"role": "user", "content": "p"}]
        assert keys == [(1, prompt_key_sha256("p", None)), (2, None), (3, prompt_key_sha256("p", conversation))]
        assert in_arena in (True, 1)
    finally:
        engine.dispose()


JOB_KINDS_AT_0004 = ("prepare", "train_tokenizer", "pretrain", "sft", "generate", "reward", "dpo", "evaluate")


def _rows_at_0004() -> list[tuple[str, list[dict[str, Any]]]]:
    """A row in every table, in an order their foreign keys accept: a job of every kind 0004 knew, a dataset
    of every kind, and what the labeling tables hold. Plain values, written as 0004's columns name them."""
    at = datetime(2026, 1, 2, 12, 30, 15, 123456, tzinfo=timezone.utc)
    statuses = ("queued", "running", "succeeded", "failed", "cancelled")
    return [
        ("users", [{"id": 1, "name": "ada", "role": "trainer", "password_hash": "h", "created_at": at,
                    "disabled": False},
                   {"id": 2, "name": "grace", "role": "labeler", "password_hash": "h", "created_at": at,
                    "disabled": True}]),
        ("datasets", [{"id": index, "name": f"{kind} ✓", "kind": kind, "format": "jsonl", "path": f"datasets/{index}",
                       "original_filename": "../a (1).jsonl", "size_bytes": 2**31 - 1,
                       "stats": {"documents": 3, "sample": ["ünïcødé 中文"], "missing": None}, "owner_id": 1,
                       "created_at": at, "content_sha256": f"{index}" * 64}
                      for index, kind in enumerate(("text", "chat", "preference", "prompts"), start=1)]),
        ("models", [{"id": 1, "name": "base", "kind": "base", "tokenizer": "gpt2", "config": {"n_layer": 2},
                     "path": "runs/3/model", "parent_model_id": None, "job_id": None, "owner_id": 1,
                     "created_at": at, "in_arena": False},
                    {"id": 2, "name": "assistant", "kind": "sft", "tokenizer": "gpt2", "config": {},
                     "path": "runs/4/adapter", "parent_model_id": 1, "job_id": None, "owner_id": None,
                     "created_at": at, "in_arena": True}]),
        ("jobs", [{"id": index, "kind": kind, "status": statuses[index % len(statuses)],
                   "params": {"kind": kind, "lr": 3e-4, "steps": [1, 2]}, "priority": index - 4,
                   "progress": index / 10, "created_at": at, "started_at": at, "finished_at": None,
                   "error": f"error of {kind}" if index % 2 else None, "worker_host": "gpu-1",
                   "heartbeat_at": at, "attempts": index, "cancel_requested": bool(index % 2),
                   "run_dir": f"runs/{index}", "dataset_id": 1 + index % 4, "input_model_id": 1 if index > 3 else None,
                   "output_model_id": 2 if kind == "sft" else None, "owner_id": 1, "name": f"my {kind}",
                   "resumable": index != 5}
                  for index, kind in enumerate(JOB_KINDS_AT_0004, start=1)]),
        ("job_events", [{"id": 1, "job_id": 3, "user_id": 1, "action": "submitted", "detail": "d",
                         "created_at": at}]),
        ("metrics", [{"id": 1, "job_id": 3, "step": 10, "name": "loss", "value": 3.25, "created_at": at},
                     {"id": 2, "job_id": 8, "step": 0, "name": "val_bpb", "value": 1.5, "created_at": at}]),
        ("job_logs", [{"id": 1, "job_id": 3, "created_at": at, "line": "step 10 | loss 3.2500"}]),
        ("prompts", [{"id": 1, "text": "Why?", "dataset_id": 4, "created_at": at, "messages": None,
                      "key_sha256": "k" * 64},
                     {"id": 2, "text": "p", "dataset_id": None, "created_at": at,
                      "messages": [{"role": "user", "content": "p"}], "key_sha256": None}]),
        ("completions", [{"id": index, "prompt_id": 1, "model_id": 2, "job_id": 5, "text": f"answer {index}",
                          "sampling": {"temperature": 0.8}, "created_at": at, "seed": 1234 + index,
                          "token_count": 7} for index in (1, 2)]),
        ("labeling_projects", [{"id": 1, "name": "p", "guidelines": "# be kind", "source_job_ids": [5],
                                "pairing": "random", "pairs_per_prompt": 2, "overlap": 3, "labeler_ids": [2],
                                "owner_id": 1, "created_at": at}]),
        ("labeling_pairs", [{"id": 1, "project_id": 1, "prompt_id": 1, "completion_a_id": 1, "completion_b_id": 2,
                             "label_count": 1}]),
        ("labeling_assignments", [{"id": 1, "pair_id": 1, "user_id": 1, "swapped": True, "expires_at": at,
                                   "created_at": at}]),
        ("comparisons", [{"id": 1, "prompt_id": 1, "completion_a_id": 1, "completion_b_id": 2, "label": "both_bad",
                          "annotator_id": 2, "source": "label", "time_spent_s": 4.5, "created_at": at, "pair_id": 1,
                          "swapped": True, "note": "n", "idempotency_key": "i" * 64}]),
    ]


def _every_row(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every table as the database gives it back, in id order."""
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as connection:
        return {name: connection.execute(select(table).order_by(*table.primary_key.columns)).all()
                for name, table in tables.tables.items() if name != "alembic_version"}


@contextmanager
def _database_at(url: str, revision: str) -> Iterator[tuple[Engine, MetaData]]:
    """A database migrated to `revision` holding a row in every table of 0004 (`_rows_at_0004`), with its engine
    and reflected tables; the engine is disposed afterwards."""
    upgrade(url, revision)
    engine = create_workbench_engine(url)
    try:
        tables = MetaData()
        tables.reflect(engine)
        with engine.begin() as connection:
            for name, rows in _rows_at_0004():
                connection.execute(tables.tables[name].insert(), rows)
        yield engine, tables
    finally:
        engine.dispose()


def test_0005_keeps_every_row_and_lets_any_job_kind_in(empty_database_url: str) -> None:
    with _database_at(empty_database_url, "0004") as (engine, tables):
        with engine.begin() as connection:
            connection.execute(text("UPDATE models SET job_id = 4 WHERE id = 2"))  # models <-> jobs both ways
        before = _every_row(engine)
        assert all(before.values()), [name for name, rows in before.items() if not rows]  # every table has rows

        upgrade(empty_database_url, "0005")
        assert _every_row(engine) == before
        with SessionLocal(empty_database_url) as fresh:
            # Columns, not Job rows: the model has columns later migrations add (0011's devices).
            assert list(fresh.scalars(select(Job.kind).order_by(Job.id))) == list(JOB_KINDS_AT_0004)
            # Explicit ids: rows inserted with theirs did not move PostgreSQL's sequences.
            fresh.execute(text("INSERT INTO jobs (id, kind, status, params, priority, progress, created_at, attempts, "
                               "cancel_requested, resumable) VALUES (100, 'clean', 'queued', '{}', 0, 0, "
                               "CURRENT_TIMESTAMP, 0, false, true)"))
            fresh.add(Dataset(id=100, name="b", kind=DatasetKind.benchmark, format="jsonl", path="p",
                              original_filename="b.jsonl", size_bytes=1))
            fresh.commit()
        with pytest.raises(RuntimeError, match="1 job.* and 1 benchmark dataset"):
            downgrade(empty_database_url, "0004")
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM jobs WHERE kind = 'clean'"))
            connection.execute(text("DELETE FROM datasets WHERE kind = 'benchmark'"))
        downgrade(empty_database_url, "0004")  # and back: 0004's CHECKs hold these rows too
        assert _every_row(engine) == before


def test_0006_adds_arena_battles_keeping_every_row(empty_database_url: str) -> None:
    with _database_at(empty_database_url, "0005") as (engine, tables):
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO comparisons (id, prompt_id, completion_a_id, completion_b_id, label, "
                                    "annotator_id, source, created_at, swapped) VALUES (2, 2, 1, 2, 'a', 2, 'arena', "
                                    "CURRENT_TIMESTAMP, false)"))  # an arena vote from before battles
        before = _every_row(engine)

        upgrade(empty_database_url, "0006")
        after = _every_row(engine)
        assert after.pop("arena_battles") == [] and after == before
        with SessionLocal(empty_database_url) as fresh:
            battle = ArenaBattle(user_id=2, prompt_id=2, left_completion_id=1, right_completion_id=2)
            fresh.add(battle)
            fresh.commit()
            battle.comparison_id = 2
            fresh.commit()
            # One vote per battle, by the database too.
            fresh.add(ArenaBattle(user_id=2, prompt_id=2, left_completion_id=1, right_completion_id=2,
                                  comparison_id=2))
            with pytest.raises(IntegrityError):
                fresh.commit()
        downgrade(empty_database_url, "0005")  # and back: the battles go, every other row stays
        assert _every_row(engine) == before


def test_0007_keeps_every_label_and_never_gives_an_id_twice(empty_database_url: str) -> None:
    with _database_at(empty_database_url, "0006") as (engine, tables):
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":  # rows inserted with their ids leave the sequence behind
                connection.execute(text("SELECT setval('comparisons_id_seq', (SELECT MAX(id) FROM comparisons))"))
        before = _every_row(engine)

        upgrade(empty_database_url, "0007")
        assert _every_row(engine) == before

        def newest_removed_then_one_stored() -> int:
            with engine.begin() as connection:
                newest = connection.execute(text("SELECT MAX(id) FROM comparisons")).scalar_one()
                connection.execute(text("DELETE FROM comparisons WHERE id = :id"), {"id": newest})
                connection.execute(text(
                    "INSERT INTO comparisons (prompt_id, completion_a_id, completion_b_id, label, annotator_id, "
                    "source, created_at, swapped) VALUES (1, 1, 2, 'tie', 1, 'label', CURRENT_TIMESTAMP, false)"))
                return newest, connection.execute(text("SELECT MAX(id) FROM comparisons")).scalar_one()

        removed, stored = newest_removed_then_one_stored()
        assert stored > removed
        downgrade(empty_database_url, "0006")  # and back: every row kept (ids may be reused again there)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id FROM comparisons")).scalars().all() == [stored]


def test_0008_gives_every_labeling_project_its_own_answer_key(empty_database_url: str) -> None:
    with _database_at(empty_database_url, "0007") as (engine, tables):
        with engine.begin() as connection:
            connection.execute(tables.tables["labeling_projects"].insert(), [
                {**_rows_at_0004()[9][1][0], "id": 2, "name": "second"}])
        before = _every_row(engine)

        upgrade(empty_database_url, "0008")
        after = _every_row(engine)
        keys = [row[-1] for row in after["labeling_projects"]]
        assert len(set(keys)) == 2 and all(len(key) == 64 and int(key, 16) >= 0 for key in keys)
        after["labeling_projects"] = [tuple(row[:-1]) for row in after["labeling_projects"]]
        assert after == {name: [tuple(row) for row in rows] for name, rows in before.items()}
        downgrade(empty_database_url, "0007")  # and back: the keys go, every row stays
        assert _every_row(engine) == before


def test_0012_adds_answer_feedback_feedback_datasets_and_kto_models_keeping_every_row(
        empty_database_url: str) -> None:
    with _database_at(empty_database_url, "0007") as (engine, tables):  # 0004's rows, carried to 0011
        upgrade(empty_database_url, "0011")
        before = _every_row(engine)
        upgrade(empty_database_url, "0012")
        after = _every_row(engine)
        assert after.pop("answer_feedback") == [] and after == before
        with SessionLocal(empty_database_url) as fresh:
            thumb = dict(user_id=1, model_id=1, messages=[{"role": "user", "content": "hi"}], answer="hello",
                         answer_sha256="a" * 64)
            fresh.add_all([AnswerFeedback(**thumb, label=True),
                           Model(id=100, name="k", kind=ModelKind.kto, tokenizer="gpt2", path="p"),
                           Dataset(id=100, name="f", kind=DatasetKind.feedback, format="jsonl", path="p",
                                   original_filename="f.jsonl", size_bytes=1)])
            fresh.commit()
            fresh.add(AnswerFeedback(**thumb, label=False))  # one thumb per (user, answer), by the database too
            with pytest.raises(IntegrityError):
                fresh.commit()
        with pytest.raises(RuntimeError, match="1 feedback dataset.* and 1 KTO model"):
            downgrade(empty_database_url, "0011")
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM models WHERE kind = 'kto'"))
            connection.execute(text("DELETE FROM datasets WHERE kind = 'feedback'"))
        downgrade(empty_database_url, "0011")  # and back: the thumbs go, every other row stays
        assert _every_row(engine) == before


def test_0016_gives_job_nodes_their_devices_keeping_every_row(empty_database_url: str) -> None:
    with _database_at(empty_database_url, "0007") as (engine, tables):  # 0004's rows, carried to 0015
        upgrade(empty_database_url, "0015")
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO job_nodes (id, job_id, attempt, node_rank, worker_host, endpoint, "
                                    "joined_at, heartbeat_at) VALUES (1, 1, 1, 1, 'workbench-2@b:2', NULL, "
                                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))  # a follower of before
        before = _every_row(engine)
        upgrade(empty_database_url, "0016")
        after = _every_row(engine)
        assert [tuple(row[:-1]) for row in after.pop("job_nodes")] == [tuple(row) for row in before["job_nodes"]]
        assert after == {name: rows for name, rows in before.items() if name != "job_nodes"}
        with engine.begin() as connection:
            assert connection.execute(text("SELECT devices FROM job_nodes")).scalar_one() is None
            connection.execute(text("""UPDATE job_nodes SET devices = '["cpu0", "cpu1"]'"""))
        with SessionLocal(empty_database_url) as fresh:
            assert fresh.get(JobNode, 1).devices == ["cpu0", "cpu1"]
        downgrade(empty_database_url, "0015")  # and back: the column goes, every row stays
        assert _every_row(engine) == before


# --- the job queue ---------------------------------------------------------------------------


def test_queue_order_is_priority_desc_then_id_asc(session: Session) -> None:
    low_first = _new_job(session, priority=0)
    high_first = _new_job(session, priority=5)
    low_second = _new_job(session, priority=0)
    _new_job(session, priority=100, status=JobStatus.running)  # not queued: not in the queue
    high_second = _new_job(session, priority=5)
    urgent = _new_job(session, priority=10)
    negative = _new_job(session, priority=-1)
    session.commit()

    queue = session.scalars(
        select(Job.id).where(Job.status == JobStatus.queued).order_by(Job.priority.desc(), Job.id.asc())
    ).all()
    assert queue == [urgent.id, high_first.id, high_second.id, low_first.id, low_second.id, negative.id]


# --- concurrency -----------------------------------------------------------------------------

METRICS_PER_WRITER = 40


def _write_metrics(url: str, job_id: int, name: str) -> None:
    # One transaction per metric, as a training loop logging every step would.
    for step in range(METRICS_PER_WRITER):
        with session_scope(url) as session:
            session.add(Metric(job_id=job_id, step=step, name=name, value=float(step)))


def _write_metrics_in_child(url: str, job_id: int, name: str, parent_engine: Engine, results: Any) -> None:
    try:
        # The fork hook emptied the engine cache: this process builds its own pool instead
        # of reusing the parent's connections.
        if get_engine(url) is parent_engine:
            raise AssertionError("forked child got its parent's engine")
        _write_metrics(url, job_id, name)
        results.put((name, "ok"))
    except BaseException as error:  # report everything; a silent child proves nothing
        results.put((name, repr(error)))


def test_concurrent_writers_do_not_error(database_url: str) -> None:
    parent_engine = get_engine(database_url)
    with session_scope(database_url) as session:
        job_id = _new_job(session, status=JobStatus.running).id  # also leaves a pooled connection to inherit

    fork = multiprocessing.get_context("fork")
    results = fork.Queue()
    children = [
        fork.Process(target=_write_metrics_in_child, args=(database_url, job_id, f"child{n}", parent_engine, results))
        for n in range(2)
    ]
    for child in children:
        child.start()
    # Meanwhile two threads of this process write through the parent's engine.
    errors: list[BaseException] = []

    def write_in_thread(name: str) -> None:
        try:
            _write_metrics(database_url, job_id, name)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write_in_thread, args=(f"thread{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    child_results = dict(results.get(timeout=120) for _ in children)
    for child in children:
        child.join(timeout=30)

    assert errors == []
    assert child_results == {"child0": "ok", "child1": "ok"}
    assert all(child.exitcode == 0 for child in children)
    with session_scope(database_url) as session:
        counts = dict(session.execute(select(Metric.name, func.count()).group_by(Metric.name)).all())
    assert counts == {name: METRICS_PER_WRITER for name in ("child0", "child1", "thread0", "thread1")}
    # The parent's pool still works after the children exited (they did not close its connections).
    with session_scope(database_url) as session:
        assert session.scalar(select(func.count()).select_from(Metric)) == 4 * METRICS_PER_WRITER


# --- users -----------------------------------------------------------------------------------


def test_password_hashing() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith(f"$2b${db.users.BCRYPT_ROUNDS:02d}$") and "correct horse" not in hashed
    assert hash_password("correct horse") != hashed  # salted
    assert verify_password("correct horse", hashed)
    assert not verify_password("correct horsE", hashed)
    assert not verify_password("correct horse", "not a bcrypt hash")
    assert not verify_password("x" * 73, hashed)
    with pytest.raises(ValueError, match="at most 72 bytes"):
        hash_password("é" * 37)  # 74 bytes in UTF-8


def test_create_user_and_authenticate(session: Session) -> None:
    user = create_user(session, "ada", "analytical engine", "trainer")
    session.commit()
    assert user.id is not None and user.role is Role.trainer
    assert user.password_hash != "analytical engine"
    assert authenticate(session, "ada", "analytical engine") == user
    assert authenticate(session, "ada", "analytical engines") is None
    assert authenticate(session, "nobody", "analytical engine") is None


@pytest.mark.parametrize(
    ("name", "password", "role", "message"),
    [
        ("", "long enough", Role.trainer, "user name '' is not valid"),
        ("has space", "long enough", Role.trainer, "is not valid"),
        ("-rf", "long enough", Role.trainer, "starting with a letter or digit"),
        ("x" * 65, "long enough", Role.trainer, "1 to 64"),
        ("ada", "short", Role.trainer, "at least 8 characters"),
        ("ada", "long enough", "root", "unknown role 'root'; choose one of: admin, trainer, labeler"),
        ("Grace", "long enough", Role.labeler, "already taken"),
    ],
)
def test_create_user_validates(session: Session, name: str, password: str, role: Any, message: str) -> None:
    create_user(session, "grace", "long enough", Role.labeler)
    with pytest.raises(ValueError, match=message):
        create_user(session, name, password, role)
    assert session.scalar(select(func.count()).select_from(User)) == 1


def test_ensure_admin_generates_a_password_once(session: Session) -> None:
    generated = ensure_admin(session, None)
    assert generated is not None and len(generated) >= 16
    admin = authenticate(session, "admin", generated)
    assert admin is not None and admin.role is Role.admin
    assert ensure_admin(session, None) is None
    assert ensure_admin(session, "another password") is None
    assert session.scalar(select(func.count()).select_from(User)) == 1
    assert authenticate(session, "admin", "another password") is None


def test_ensure_admin_uses_the_configured_password(session: Session) -> None:
    assert ensure_admin(session, "from the environment") is None
    assert authenticate(session, "admin", "from the environment") is not None


def test_ensure_admin_does_nothing_when_an_admin_exists(session: Session) -> None:
    create_user(session, "root", "long enough", Role.admin)
    session.commit()
    assert ensure_admin(session, None) is None
    assert session.scalars(select(User.name)).all() == ["root"]


def test_ensure_admin_explains_a_bad_configured_password(session: Session) -> None:
    with pytest.raises(ValueError, match="first admin account: password must be at least 8"):
        ensure_admin(session, "short")
