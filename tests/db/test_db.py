"""The database layer on SQLite and PostgreSQL: migrations, every table, constraints, the job
queue order, concurrent writers and engines across fork (data migrations: test_migration_data.py; user
accounts: test_users_db.py).

Tests that take ``database_url``/``session``/``empty_database_url`` run once per backend
(see tests/conftest.py).
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from db.migrate import current_revision, downgrade, head_revision, is_up_to_date, upgrade
from db.models import (
    Base,
    Comparison,
    Completion,
    Dataset,
    DatasetKind,
    Job,
    JobLog,
    JobStatus,
    Metric,
    Model,
    ModelKind,
    Prompt,
    Role,
    User,
)
from db.session import SessionLocal, create_workbench_engine, get_engine, session_scope
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
