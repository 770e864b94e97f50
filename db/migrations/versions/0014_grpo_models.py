"""GRPO models: models.kind gains "grpo" (the policies the grpo job kind produces).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

Issue 21 (GRPO). Written by hand like 0012: constraint names follow db.models.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Literals, not db.models' enums: this file must keep meaning what it meant when it was written.
MODEL_KINDS_BEFORE = ("base", "sft", "reward", "dpo", "kto")
MODEL_KINDS = MODEL_KINDS_BEFORE + ("grpo",)


def _one_of(column: str, values: Sequence[str]) -> sa.TextClause:
    return sa.text(f"{column} IN (" + ", ".join(f"'{value}'" for value in values) + ")")


def upgrade() -> None:
    with op.batch_alter_table("models") as batch_op:
        batch_op.drop_constraint("ck_models_kind", type_="check")
        batch_op.create_check_constraint("ck_models_kind", _one_of("kind", MODEL_KINDS))


def downgrade() -> None:
    models = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM models WHERE kind = 'grpo'")).scalar_one()
    if models:
        raise RuntimeError(f"cannot downgrade below 0015: {models} GRPO model(s) would break the CHECK constraint of "
                           "0013; delete them first")
    with op.batch_alter_table("models") as batch_op:
        batch_op.drop_constraint("ck_models_kind", type_="check")
        batch_op.create_check_constraint("ck_models_kind", _one_of("kind", MODEL_KINDS_BEFORE))
