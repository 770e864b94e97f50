"""Arena battles: the two answers the arena showed one person, which their one vote names.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

Written by hand like 0001: constraint names follow db.models.NAMING_CONVENTION.

- arena_battles: a new table (every existing row of every other table is kept as it is). A vote names a
  battle the server created for the voter and is stored once (`comparison_id`, unique); which models wrote the
  answers is told only for that battle, after that vote. SQLite gets AUTOINCREMENT, so a battle's id is never
  given to another battle. Votes stored before this revision (comparisons with source "arena") have no battle
  and stay counted by the leaderboard and the preference pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "arena_battles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("left_completion_id", sa.Integer(), nullable=False),
        sa.Column("right_completion_id", sa.Integer(), nullable=False),
        sa.Column("comparison_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_arena_battles"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_arena_battles_user_id_users"),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompts.id"], name="fk_arena_battles_prompt_id_prompts"),
        sa.ForeignKeyConstraint(["left_completion_id"], ["completions.id"],
                                name="fk_arena_battles_left_completion_id_completions"),
        sa.ForeignKeyConstraint(["right_completion_id"], ["completions.id"],
                                name="fk_arena_battles_right_completion_id_completions"),
        sa.ForeignKeyConstraint(["comparison_id"], ["comparisons.id"],
                                name="fk_arena_battles_comparison_id_comparisons"),
        sa.UniqueConstraint("comparison_id", name="uq_arena_battles_comparison_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_arena_battles_user_id", "arena_battles", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_arena_battles_user_id", table_name="arena_battles")
    op.drop_table("arena_battles")
