"""Labeling: projects, pairs, assignments (held overlap slots), labels that know their pair (and skip), users who can be disabled,
completions that record their seed and length, prompts that can be conversations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Written by hand like 0001: constraint names follow db.models.NAMING_CONVENTION. The label CHECK
gains "skip", so it is dropped and created again (batch mode rebuilds the table on SQLite).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LABELS_BEFORE = ("a", "b", "tie", "both_bad")
LABELS = LABELS_BEFORE + ("skip",)


def _label_check(values: Sequence[str]) -> str:
    return "label IN (" + ", ".join(f"'{value}'" for value in values) + ")"


def upgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("users") as batch_op:
        batch_op.alter_column("disabled", server_default=None)
    with op.batch_alter_table("prompts") as batch_op:
        batch_op.add_column(sa.Column("messages", sa.JSON(), nullable=True))
    with op.batch_alter_table("completions") as batch_op:
        batch_op.add_column(sa.Column("seed", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("token_count", sa.Integer(), nullable=True))

    op.create_table(
        "labeling_projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("guidelines", sa.Text(), nullable=False),
        sa.Column("source_job_ids", sa.JSON(), nullable=False),
        sa.Column("pairing", sa.String(length=16), nullable=False),
        sa.Column("pairs_per_prompt", sa.Integer(), nullable=True),
        sa.Column("overlap", sa.Integer(), nullable=False),
        sa.Column("labeler_ids", sa.JSON(), nullable=True),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_labeling_projects"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_labeling_projects_owner_id_users"),
    )
    op.create_table(
        "labeling_pairs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("completion_a_id", sa.Integer(), nullable=False),
        sa.Column("completion_b_id", sa.Integer(), nullable=False),
        sa.Column("label_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_labeling_pairs"),
        sa.ForeignKeyConstraint(["project_id"], ["labeling_projects.id"],
                                name="fk_labeling_pairs_project_id_labeling_projects", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompts.id"], name="fk_labeling_pairs_prompt_id_prompts"),
        sa.ForeignKeyConstraint(["completion_a_id"], ["completions.id"],
                                name="fk_labeling_pairs_completion_a_id_completions"),
        sa.ForeignKeyConstraint(["completion_b_id"], ["completions.id"],
                                name="fk_labeling_pairs_completion_b_id_completions"),
        sa.UniqueConstraint("project_id", "completion_a_id", "completion_b_id",
                            name="uq_labeling_pairs_project_id"),
    )
    op.create_index("ix_labeling_pairs_queue", "labeling_pairs", ["project_id", "label_count", "id"])
    op.create_table(
        "labeling_assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("swapped", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_labeling_assignments"),
        sa.ForeignKeyConstraint(["pair_id"], ["labeling_pairs.id"],
                                name="fk_labeling_assignments_pair_id_labeling_pairs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_labeling_assignments_user_id_users"),
        sa.UniqueConstraint("pair_id", "user_id", name="uq_labeling_assignments_pair_id"),
    )
    op.create_index("ix_labeling_assignments_pair_id", "labeling_assignments", ["pair_id"])

    with op.batch_alter_table("comparisons") as batch_op:
        batch_op.add_column(sa.Column("pair_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("swapped", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key("fk_comparisons_pair_id_labeling_pairs", "labeling_pairs", ["pair_id"], ["id"],
                                    ondelete="CASCADE")
        batch_op.create_unique_constraint("uq_comparisons_pair_id", ["pair_id", "annotator_id"])
        batch_op.create_unique_constraint("uq_comparisons_idempotency_key", ["idempotency_key"])
        batch_op.drop_constraint("ck_comparisons_label", type_="check")
        batch_op.create_check_constraint("ck_comparisons_label", sa.text(_label_check(LABELS)))
    with op.batch_alter_table("comparisons") as batch_op:
        batch_op.alter_column("swapped", server_default=None)
    op.create_index("ix_comparisons_pair_id", "comparisons", ["pair_id"])


def downgrade() -> None:
    op.drop_index("ix_comparisons_pair_id", table_name="comparisons")
    op.execute("DELETE FROM comparisons WHERE label = 'skip'")
    with op.batch_alter_table("comparisons") as batch_op:
        batch_op.drop_constraint("ck_comparisons_label", type_="check")
        batch_op.create_check_constraint("ck_comparisons_label", sa.text(_label_check(LABELS_BEFORE)))
        batch_op.drop_constraint("uq_comparisons_idempotency_key", type_="unique")
        batch_op.drop_constraint("uq_comparisons_pair_id", type_="unique")
        batch_op.drop_constraint("fk_comparisons_pair_id_labeling_pairs", type_="foreignkey")
        batch_op.drop_column("idempotency_key")
        batch_op.drop_column("note")
        batch_op.drop_column("swapped")
        batch_op.drop_column("pair_id")
    op.drop_index("ix_labeling_assignments_pair_id", table_name="labeling_assignments")
    op.drop_table("labeling_assignments")
    op.drop_index("ix_labeling_pairs_queue", table_name="labeling_pairs")
    op.drop_table("labeling_pairs")
    op.drop_table("labeling_projects")
    with op.batch_alter_table("completions") as batch_op:
        batch_op.drop_column("token_count")
        batch_op.drop_column("seed")
    with op.batch_alter_table("prompts") as batch_op:
        batch_op.drop_column("messages")
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("disabled")
