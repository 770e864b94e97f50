"""Thumbs on chat answers (KTO's unpaired feedback), feedback datasets, KTO models.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

Issue 21 (KTO). Written by hand like 0001: constraint names follow db.models.NAMING_CONVENTION.

- answer_feedback: a person's thumb up or down on one answer a model gave in the Chat tab, with the conversation it
  answered; one row per (user, answer), the answer named by answer_key_sha256(model, conversation, answer). Ids are
  never reused (SQLite AUTOINCREMENT): a KTO job's record of the rows it trained on keeps naming those rows.
- datasets.kind: the CHECK gains "feedback" (TRL's unpaired prompt / completion / label).
- models.kind: the CHECK gains "kto" (the policies the kto job kind produces).

Chained to 0011 (issue 20's device allocation), the reserved order.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Literals, not db.models' enums: this file must keep meaning what it meant when it was written.
DATASET_KINDS_BEFORE = ("text", "chat", "preference", "prompts", "benchmark")
DATASET_KINDS = DATASET_KINDS_BEFORE + ("feedback",)
MODEL_KINDS_BEFORE = ("base", "sft", "reward", "dpo")
MODEL_KINDS = MODEL_KINDS_BEFORE + ("kto",)


def _one_of(column: str, values: Sequence[str]) -> sa.TextClause:
    return sa.text(f"{column} IN (" + ", ".join(f"'{value}'" for value in values) + ")")


def upgrade() -> None:
    op.create_table(
        "answer_feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("label", sa.Boolean(), nullable=False),
        sa.Column("answer_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_answer_feedback"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_answer_feedback_user_id_users"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_answer_feedback_model_id_models",
                                ondelete="SET NULL"),
        sa.UniqueConstraint("user_id", "answer_sha256", name="uq_answer_feedback_user_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_answer_feedback_user_id", "answer_feedback", ["user_id"])
    op.create_index("ix_answer_feedback_model_id", "answer_feedback", ["model_id"])
    with op.batch_alter_table("datasets") as batch_op:
        batch_op.drop_constraint("ck_datasets_kind", type_="check")
        batch_op.create_check_constraint("ck_datasets_kind", _one_of("kind", DATASET_KINDS))
    with op.batch_alter_table("models") as batch_op:
        batch_op.drop_constraint("ck_models_kind", type_="check")
        batch_op.create_check_constraint("ck_models_kind", _one_of("kind", MODEL_KINDS))


def _refuse_rows_the_old_schema_cannot_hold() -> None:
    """Going back would have to delete feedback datasets or KTO models (and what depends on them): refuse, saying
    which. The thumbs themselves go with their table."""
    connection = op.get_bind()
    datasets = connection.execute(sa.text("SELECT COUNT(*) FROM datasets WHERE kind = 'feedback'")).scalar_one()
    models = connection.execute(sa.text("SELECT COUNT(*) FROM models WHERE kind = 'kto'")).scalar_one()
    if datasets or models:
        raise RuntimeError(f"cannot downgrade below 0012: {datasets} feedback dataset(s) and {models} KTO model(s) "
                           "would break the CHECK constraints of 0011; delete them first")


def downgrade() -> None:
    _refuse_rows_the_old_schema_cannot_hold()
    with op.batch_alter_table("models") as batch_op:
        batch_op.drop_constraint("ck_models_kind", type_="check")
        batch_op.create_check_constraint("ck_models_kind", _one_of("kind", MODEL_KINDS_BEFORE))
    with op.batch_alter_table("datasets") as batch_op:
        batch_op.drop_constraint("ck_datasets_kind", type_="check")
        batch_op.create_check_constraint("ck_datasets_kind", _one_of("kind", DATASET_KINDS_BEFORE))
    op.drop_index("ix_answer_feedback_model_id", table_name="answer_feedback")
    op.drop_index("ix_answer_feedback_user_id", table_name="answer_feedback")
    op.drop_table("answer_feedback")
