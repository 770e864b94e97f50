"""Jobs on several machines: the workers taking part in each attempt and the rendezvous endpoint (issue 20 item 4).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

`job_nodes`: one row per worker in one attempt of a job with `nodes` > 1 (worker/runtime/rendezvous.py). Node 0
(the worker that claimed the job) publishes the c10d rendezvous endpoint in its row; the others join by adding
theirs. Written by hand like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("node_rank", sa.Integer(), nullable=False),
        sa.Column("worker_host", sa.String(255), nullable=False),
        sa.Column("endpoint", sa.String(255), nullable=True),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_job_nodes"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_nodes_job_id_jobs", ondelete="CASCADE"),
        sa.UniqueConstraint("job_id", "attempt", "node_rank", name="uq_job_nodes_job_id"),
    )
    op.create_index("ix_job_nodes_job_id", "job_nodes", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_job_nodes_job_id", table_name="job_nodes")
    op.drop_table("job_nodes")
