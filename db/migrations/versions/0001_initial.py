"""Initial schema: users, datasets, models, jobs, metrics, job logs, prompts, completions, comparisons.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Written by hand from db/models.py as it stood at this revision, and kept self-contained: enum
values are literals here (VARCHAR(32) + a CHECK, the models' non-native Enum), every
constraint is named as db.models.NAMING_CONVENTION names it, and timestamps are plain
``DateTime(timezone=True)`` (the models' UTCDateTime only adds Python-side conversion).

``models.job_id`` and ``jobs.input_model_id`` point at each other, so the models → jobs key
is added after both tables exist (batch mode recreates the table on SQLite, ALTERs elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = ("admin", "trainer", "labeler")
DATASET_KINDS = ("text", "chat", "preference", "prompts")
MODEL_KINDS = ("base", "sft", "reward", "dpo")
JOB_KINDS = ("prepare", "train_tokenizer", "pretrain", "sft", "generate", "reward", "dpo", "evaluate")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
LABELS = ("a", "b", "tie", "both_bad")


def _enum_column(name: str) -> sa.Column:
    return sa.Column(name, sa.String(length=32), nullable=False)


def _one_of(table: str, column: str, values: Sequence[str]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=f"ck_{table}_{column}")


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        _enum_column("role"),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
        _one_of("users", "role", ROLES),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        _enum_column("kind"),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("original_filename", sa.String(length=255), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_datasets_owner_id_users"),
        _one_of("datasets", "kind", DATASET_KINDS),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        _enum_column("kind"),
        sa.Column("tokenizer", sa.String(length=100), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("parent_model_id", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),  # foreign key added below, once jobs exists
        sa.Column("owner_id", sa.Integer(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.ForeignKeyConstraint(["parent_model_id"], ["models.id"], name="fk_models_parent_model_id_models"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_models_owner_id_users"),
        _one_of("models", "kind", MODEL_KINDS),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        _enum_column("kind"),
        _enum_column("status"),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        _created_at(),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker_host", sa.String(length=255), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("run_dir", sa.String(length=500), nullable=True),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("input_model_id", sa.Integer(), nullable=True),
        sa.Column("output_model_id", sa.Integer(), nullable=True),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_jobs_dataset_id_datasets"),
        sa.ForeignKeyConstraint(["input_model_id"], ["models.id"], name="fk_jobs_input_model_id_models"),
        sa.ForeignKeyConstraint(["output_model_id"], ["models.id"], name="fk_jobs_output_model_id_models"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_jobs_owner_id_users"),
        _one_of("jobs", "kind", JOB_KINDS),
        _one_of("jobs", "status", JOB_STATUSES),
    )
    # The queue query: WHERE status = 'queued' ORDER BY priority DESC, id ASC.
    op.create_index("ix_jobs_status_priority", "jobs", ["status", "priority", "id"])
    with op.batch_alter_table("models") as batch_op:
        batch_op.create_foreign_key("fk_models_job_id_jobs", "jobs", ["job_id"], ["id"])

    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_metrics_job_id_jobs", ondelete="CASCADE"),
    )
    op.create_index("ix_metrics_job_name_step", "metrics", ["job_id", "name", "step"])

    op.create_table(
        "job_logs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        _created_at(),
        sa.Column("line", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_logs"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_logs_job_id_jobs", ondelete="CASCADE"),
    )
    op.create_index("ix_job_logs_job", "job_logs", ["job_id", "id"])

    op.create_table(
        "prompts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_prompts"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_prompts_dataset_id_datasets"),
    )
    op.create_index("ix_prompts_dataset_id", "prompts", ["dataset_id"])

    op.create_table(
        "completions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sampling", sa.JSON(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_completions"),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompts.id"], name="fk_completions_prompt_id_prompts"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_completions_model_id_models"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_completions_job_id_jobs"),
    )
    op.create_index("ix_completions_prompt_id", "completions", ["prompt_id"])

    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("completion_a_id", sa.Integer(), nullable=False),
        sa.Column("completion_b_id", sa.Integer(), nullable=False),
        _enum_column("label"),
        sa.Column("annotator_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("time_spent_s", sa.Float(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_comparisons"),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompts.id"], name="fk_comparisons_prompt_id_prompts"),
        sa.ForeignKeyConstraint(
            ["completion_a_id"], ["completions.id"], name="fk_comparisons_completion_a_id_completions"
        ),
        sa.ForeignKeyConstraint(
            ["completion_b_id"], ["completions.id"], name="fk_comparisons_completion_b_id_completions"
        ),
        sa.ForeignKeyConstraint(["annotator_id"], ["users.id"], name="fk_comparisons_annotator_id_users"),
        sa.CheckConstraint("completion_a_id <> completion_b_id", name="ck_comparisons_distinct_completions"),
        _one_of("comparisons", "label", LABELS),
    )
    op.create_index("ix_comparisons_prompt_id", "comparisons", ["prompt_id"])
    op.create_index("ix_comparisons_annotator_id", "comparisons", ["annotator_id"])


def downgrade() -> None:
    # Children before parents; the models <-> jobs cycle is cut first.
    for table in ("comparisons", "completions", "prompts", "job_logs", "metrics"):
        op.drop_table(table)  # drops its indexes with it
    with op.batch_alter_table("models") as batch_op:
        batch_op.drop_constraint("fk_models_job_id_jobs", type_="foreignkey")
    op.drop_index("ix_jobs_status_priority", table_name="jobs")
    for table in ("jobs", "models", "datasets", "users"):
        op.drop_table(table)
