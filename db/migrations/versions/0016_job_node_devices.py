"""The device slots a follower of a multi-node job holds on its worker (issue 20 items 3 and 4 together).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

`job_nodes.devices`: the slots a follower (node_rank > 0) took on its worker when it joined, so that the worker's
other processes count them as held (`worker.jobs.lifecycle.held_slots`) and do not claim a job onto them. Node 0's
slots are its job's `assigned_devices`, as before. Empty for existing rows (held as one unnamed slot, like a job
row without `assigned_devices`). Written by hand like 0011 and 0013.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_nodes") as batch_op:
        batch_op.add_column(sa.Column("devices", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_nodes") as batch_op:
        batch_op.drop_column("devices")
