"""Task sessions: the assistant session that claimed an active task.

A task started in an assistant's session records its id, so the session's brief can show
its own work and a session that ended can release what it still held.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("micro_tasks", sa.Column("session_id", sa.String(length=200), nullable=True))
    op.create_index(op.f("ix_micro_tasks_session_id"), "micro_tasks", ["session_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_micro_tasks_session_id"), table_name="micro_tasks")
    with op.batch_alter_table("micro_tasks") as batch:
        batch.drop_column("session_id")
