"""Embedding attempts: how often a memory failed to embed on its own, and why.

A memory the embedding server refuses by itself (too long for the model, or a server error
that repeats for that input alone) is retried by later backfills a few times, then marked
`failed` with the reason kept, so that it never blocks the memories after it.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "memory_entries",
        sa.Column("embedding_attempts", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column("memory_entries", sa.Column("embedding_error", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("memory_entries", "embedding_error")
    op.drop_column("memory_entries", "embedding_attempts")
