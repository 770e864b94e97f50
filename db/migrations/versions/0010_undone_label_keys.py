"""Keep the idempotency keys of undone labels.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

An undo deletes the label, and with it the only record of its idempotency key; a late retry of the request that
stored it (a network retry arriving after the undo) then stored the label again. `undone_label_keys` keeps the
key of every label undone from now on; a label whose key is there is refused (web/services/labeling.py).
Written by hand like 0001: constraint names follow db.models.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "undone_label_keys",
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key", name="pk_undone_label_keys"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_undone_label_keys_user_id_users"),
    )


def downgrade() -> None:
    op.drop_table("undone_label_keys")
