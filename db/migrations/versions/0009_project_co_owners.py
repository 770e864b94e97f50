"""Labeling projects get co-owners.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

A project's owner (owner_id, who created it) and its co-owners (labeling_projects.co_owner_ids, a JSON list
of user ids like labeler_ids; NULL: none) change it, see its agreement and export it with the labelers' names;
other trainers may not (admins may: `web.services.access`). Every existing project has no co-owner.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("labeling_projects") as batch_op:
        batch_op.add_column(sa.Column("co_owner_ids", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("labeling_projects") as batch_op:
        batch_op.drop_column("co_owner_ids")
