"""Job events (who changed a job), job names and resumability, dataset content hashes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Written by hand like 0001: constraint names follow db.models.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_events"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_events_job_id_jobs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_job_events_user_id_users"),
    )
    op.create_index("ix_job_events_job", "job_events", ["job_id", "id"])
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=200), nullable=True))
        # Existing jobs stay resumable (the default every job had before).
        batch_op.add_column(sa.Column("resumable", sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("resumable", server_default=None)  # the models give the default, as elsewhere
    with op.batch_alter_table("datasets") as batch_op:
        batch_op.add_column(sa.Column("content_sha256", sa.String(length=64), nullable=True))
    op.create_index("ix_datasets_content_sha256", "datasets", ["content_sha256"])


def downgrade() -> None:
    op.drop_index("ix_datasets_content_sha256", table_name="datasets")
    with op.batch_alter_table("datasets") as batch_op:
        batch_op.drop_column("content_sha256")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("resumable")
        batch_op.drop_column("name")
    op.drop_index("ix_job_events_job", table_name="job_events")
    op.drop_table("job_events")
