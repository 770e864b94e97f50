"""Migrations keep the rows people already have: each data migration (0004 onwards) run on a database holding rows
of every table as the revision before left them, checked row for row on SQLite and PostgreSQL, and down again
where it goes down. The schema itself (upgrade = the models, concurrent upgrades) is tests/db/test_db.py's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, select, text
from sqlalchemy.exc import IntegrityError

from db.migrate import downgrade, upgrade
from db.models import (
    AnswerFeedback,
    ArenaBattle,
    Dataset,
    DatasetKind,
    Job,
    JobNode,
    Model,
    ModelKind,
)
from db.session import SessionLocal, create_workbench_engine


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
