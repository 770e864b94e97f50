"""Raw web data as a dataset kind: datasets.kind gains "raw" (HTML pages, WARC, JSONL with html/text), the input of
the clean job (issue 22).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

Written by hand like 0012 and 0014: constraint names follow db.models.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Literals, not db.models' enums: this file must keep meaning what it meant when it was written.
DATASET_KINDS_BEFORE = ("text", "chat", "preference", "prompts", "benchmark", "feedback")
DATASET_KINDS = DATASET_KINDS_BEFORE + ("raw",)


def _one_of(column: str, values: Sequence[str]) -> sa.TextClause:
    return sa.text(f"{column} IN (" + ", ".join(f"'{value}'" for value in values) + ")")


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch_op:
        batch_op.drop_constraint("ck_datasets_kind", type_="check")
        batch_op.create_check_constraint("ck_datasets_kind", _one_of("kind", DATASET_KINDS))


def downgrade() -> None:
    raw = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM datasets WHERE kind = 'raw'")).scalar_one()
    if raw:
        raise RuntimeError(f"cannot downgrade below 0014: {raw} raw dataset(s) would break the CHECK constraint of "
                           "0015; delete them first")
    with op.batch_alter_table("datasets") as batch_op:
        batch_op.drop_constraint("ck_datasets_kind", type_="check")
        batch_op.create_check_constraint("ck_datasets_kind", _one_of("kind", DATASET_KINDS_BEFORE))
