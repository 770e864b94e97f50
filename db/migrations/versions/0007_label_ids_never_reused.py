"""Label ids are never reused: SQLite's comparisons table gets AUTOINCREMENT.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

Without AUTOINCREMENT SQLite gives a new row the largest id + 1, so the id of a label just removed (an undo
of the newest label) went to the next label stored, whoever's: an idempotent retry could then be answered
with an id that named another labeler's label. With it, ids only grow (SQLite keeps the largest id ever
given in sqlite_sequence). PostgreSQL's sequences never reuse ids: nothing changes there.

SQLite: the table is rebuilt by batch mode (every row copied with its id; the sequence starts at the largest
id copied, so an id removed before this revision may still be given once). Indexes and constraints keep their
names (db.models.NAMING_CONVENTION).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild_comparisons(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("comparisons", recreate="always",
                              table_kwargs={"sqlite_autoincrement": autoincrement}):
        pass


def upgrade() -> None:
    _rebuild_comparisons(True)


def downgrade() -> None:
    _rebuild_comparisons(False)
