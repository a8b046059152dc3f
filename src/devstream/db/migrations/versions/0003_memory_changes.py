"""Memory change log: every change to a memory row, in commit order, for index catch-up.

Triggers write one row per inserted, changed or deleted entry in the same transaction as the
change itself, including the link changes that deleting a plan, phase or task causes (SQLite
runs ON DELETE SET NULL as an UPDATE, which fires the update trigger). Each row carries the
store-generation token of its transaction, so a reader can tell that the change it last
applied still exists (a rolled-back change is gone, and its sequence number may be reused
with another token). The log keeps its newest rows; older ones are pruned in steps.

On SQLite an fts5vocab table exposes FTS5's own postings, so the in-process full-text index
is built from what FTS5 tokenized instead of tokenizing again.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STORE_GENERATION = "(SELECT generation FROM store_state WHERE id = 1)"
# Columns the memory indexes hold; a retrieval count or a timestamp alone is no change.
_INDEXED = (
    "content, content_type, keywords, plan_id, phase_id, task_id, embedding, "
    "embedding_model, embedding_dim, embedding_status, created_at"
)
_SQLITE_UP = (
    f"""CREATE TRIGGER memory_changes_insert AFTER INSERT ON memory_entries BEGIN
        INSERT INTO memory_changes(entry_id, generation) VALUES (new.id, {_STORE_GENERATION});
    END""",
    f"""CREATE TRIGGER memory_changes_update AFTER UPDATE OF {_INDEXED}
    ON memory_entries BEGIN
        INSERT INTO memory_changes(entry_id, generation) VALUES (new.id, {_STORE_GENERATION});
    END""",
    f"""CREATE TRIGGER memory_changes_delete AFTER DELETE ON memory_entries BEGIN
        INSERT INTO memory_changes(entry_id, generation) VALUES (old.id, {_STORE_GENERATION});
    END""",
    # Every 1,024th change drops what is more than 100,000 changes old.
    """CREATE TRIGGER memory_changes_prune AFTER INSERT ON memory_changes
    WHEN new.seq % 1024 = 0 BEGIN
        DELETE FROM memory_changes WHERE seq <= new.seq - 100000;
    END""",
    "CREATE VIRTUAL TABLE memory_fts_instance USING fts5vocab(memory_fts, instance)",
)
_SQLITE_DOWN = (
    "DROP TABLE memory_fts_instance",
    "DROP TRIGGER memory_changes_prune",
    "DROP TRIGGER memory_changes_delete",
    "DROP TRIGGER memory_changes_update",
    "DROP TRIGGER memory_changes_insert",
)


def _on_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    op.create_table(
        "memory_changes",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_memory_changes")),
    )
    if _on_sqlite():
        for statement in _SQLITE_UP:
            op.execute(statement)


def downgrade() -> None:
    if _on_sqlite():
        for statement in _SQLITE_DOWN:
            op.execute(statement)
    op.drop_table("memory_changes")
