"""Labelers see opaque answer ids: each labeling project gets a random key for them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

A labeler's screen named the two answers of a pair by their completions' database ids, which follow the
generate jobs that wrote them (so, the models). It now names them by a keyed hash of the pair and the
completion (`web.services.labeling.answer_id`), keyed per project with labeling_projects.answer_key: a random
value every existing project gets here, and every new one at creation. Every other row is kept as it is.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("labeling_projects") as batch_op:
        batch_op.add_column(sa.Column("answer_key", sa.String(length=64), nullable=True))
    connection = op.get_bind()
    for (project_id,) in connection.execute(sa.text("SELECT id FROM labeling_projects")).all():
        connection.execute(sa.text("UPDATE labeling_projects SET answer_key = :key WHERE id = :id"),
                           {"key": secrets.token_hex(32), "id": project_id})
    with op.batch_alter_table("labeling_projects") as batch_op:
        batch_op.alter_column("answer_key", existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("labeling_projects") as batch_op:
        batch_op.drop_column("answer_key")
