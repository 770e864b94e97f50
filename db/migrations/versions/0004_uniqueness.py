"""One dataset per file and kind, one prompt per dataset and text, models offered in the arena.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Written by hand like 0001: constraint names follow db.models.NAMING_CONVENTION.

- datasets: a unique index on (content_sha256, kind) replaces the plain index on content_sha256, so two
  identical uploads at the same instant cannot both be stored (dedupe is global per kind, as the upload
  code checks it). Rows stored before hashing keep NULL, which never collides. A duplicate that a race
  already stored loses its hash (the oldest dataset keeps it: the one an upload is pointed to).
- prompts: key_sha256 (`db.models.prompt_key_sha256` of text and messages) filled for every prompt of a
  dataset, and a unique constraint on (dataset_id, key_sha256). Prompts already stored twice by a race
  keep their rows (completions point at both); only the oldest gets the key, the one lookups find.
- models: in_arena, true for every model.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.models import prompt_key_sha256

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _forget_duplicate_dataset_hashes() -> None:
    op.execute("UPDATE datasets SET content_sha256 = NULL WHERE content_sha256 IS NOT NULL AND id NOT IN "
               "(SELECT MIN(id) FROM datasets WHERE content_sha256 IS NOT NULL GROUP BY content_sha256, kind)")


def _fill_prompt_keys() -> None:
    prompts = sa.table("prompts", sa.column("id", sa.Integer), sa.column("text", sa.Text),
                       sa.column("messages", sa.JSON), sa.column("dataset_id", sa.Integer),
                       sa.column("key_sha256", sa.String))
    connection = op.get_bind()
    rows = connection.execute(sa.select(prompts.c.id, prompts.c.text, prompts.c.messages, prompts.c.dataset_id)
                              .where(prompts.c.dataset_id.is_not(None)).order_by(prompts.c.id)).all()
    seen: set[tuple[int, str]] = set()
    keys = []
    for prompt_id, text, messages, dataset_id in rows:
        key = prompt_key_sha256(text, messages)
        if (dataset_id, key) not in seen:  # oldest first: a later copy stays without a key
            seen.add((dataset_id, key))
            keys.append({"prompt_id": prompt_id, "key": key})
    if keys:
        connection.execute(prompts.update().where(prompts.c.id == sa.bindparam("prompt_id"))
                           .values(key_sha256=sa.bindparam("key")), keys)


def upgrade() -> None:
    _forget_duplicate_dataset_hashes()
    op.drop_index("ix_datasets_content_sha256", table_name="datasets")
    op.create_index("ix_datasets_content_sha256_kind", "datasets", ["content_sha256", "kind"], unique=True)

    with op.batch_alter_table("prompts") as batch_op:
        batch_op.add_column(sa.Column("key_sha256", sa.String(length=64), nullable=True))
    _fill_prompt_keys()
    with op.batch_alter_table("prompts") as batch_op:
        batch_op.create_unique_constraint("uq_prompts_dataset_id", ["dataset_id", "key_sha256"])

    with op.batch_alter_table("models") as batch_op:
        batch_op.add_column(sa.Column("in_arena", sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table("models") as batch_op:
        batch_op.alter_column("in_arena", server_default=None)  # the models give the default, as elsewhere


def downgrade() -> None:
    with op.batch_alter_table("models") as batch_op:
        batch_op.drop_column("in_arena")
    with op.batch_alter_table("prompts") as batch_op:
        batch_op.drop_constraint("uq_prompts_dataset_id", type_="unique")
        batch_op.drop_column("key_sha256")
    op.drop_index("ix_datasets_content_sha256_kind", table_name="datasets")
    op.create_index("ix_datasets_content_sha256", "datasets", ["content_sha256"])
