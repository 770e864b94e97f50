"""A job's kind is a plain string checked by the job layer's registry; datasets may be benchmarks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Written by hand like 0001: constraint names follow db.models.NAMING_CONVENTION.

- jobs.kind: the CHECK listing the job kinds is dropped, so a new kind (one folder in worker/kinds/ and
  one registry line) needs no migration. The column stays VARCHAR(32); every row keeps its value. Which
  kinds a job may have is checked when it is submitted (`worker.jobs.lifecycle`), against the registry.
- datasets.kind: the CHECK gains "benchmark" (multiple-choice questions, read by `llm.multiple_choice`).

Batch mode rebuilds both tables on SQLite (copying every row); elsewhere it drops and adds constraints.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Literals, not db.models' enums: this file must keep meaning what it meant when it was written.
JOB_KINDS_BEFORE = ("prepare", "train_tokenizer", "pretrain", "sft", "generate", "reward", "dpo", "evaluate")
DATASET_KINDS_BEFORE = ("text", "chat", "preference", "prompts")
DATASET_KINDS = DATASET_KINDS_BEFORE + ("benchmark",)


def _one_of(column: str, values: Sequence[str]) -> sa.TextClause:
    return sa.text(f"{column} IN (" + ", ".join(f"'{value}'" for value in values) + ")")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_constraint("ck_jobs_kind", type_="check")
    with op.batch_alter_table("datasets") as batch_op:
        batch_op.drop_constraint("ck_datasets_kind", type_="check")
        batch_op.create_check_constraint("ck_datasets_kind", _one_of("kind", DATASET_KINDS))


def _refuse_rows_the_old_schema_cannot_hold() -> None:
    """Going back would have to delete jobs, their metrics and models, or benchmark datasets: refuse, saying which."""
    connection = op.get_bind()
    jobs = connection.execute(sa.text("SELECT COUNT(*) FROM jobs WHERE kind NOT IN :kinds")
                              .bindparams(sa.bindparam("kinds", JOB_KINDS_BEFORE, expanding=True))).scalar_one()
    datasets = connection.execute(sa.text("SELECT COUNT(*) FROM datasets WHERE kind = 'benchmark'")).scalar_one()
    if jobs or datasets:
        raise RuntimeError(f"cannot downgrade below 0005: {jobs} job(s) of kinds 0004 does not know and "
                           f"{datasets} benchmark dataset(s) would break its CHECK constraints; delete them first")


def downgrade() -> None:
    _refuse_rows_the_old_schema_cannot_hold()
    with op.batch_alter_table("datasets") as batch_op:
        batch_op.drop_constraint("ck_datasets_kind", type_="check")
        batch_op.create_check_constraint("ck_datasets_kind", _one_of("kind", DATASET_KINDS_BEFORE))
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.create_check_constraint("ck_jobs_kind", _one_of("kind", JOB_KINDS_BEFORE))
