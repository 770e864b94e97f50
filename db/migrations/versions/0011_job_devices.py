"""Device slots of jobs: how many a job asks of a worker, and which its claim gave it (issue 20 item 3).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

`jobs.devices` (what the claim compares with a worker's free slots, in SQL) is 1 for every existing job: before
this, every job ran on one device. `jobs.assigned_devices` is empty for them (worker/jobs/devices.py's
`assigned_devices` reads a missing one as the worker's first slot). Written by hand like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("devices", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("assigned_devices", sa.JSON(), nullable=True))
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("devices", server_default=None)  # the models give the default, as elsewhere


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("assigned_devices")
        batch_op.drop_column("devices")
