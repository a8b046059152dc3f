"""PostgreSQL: pgvector for vectors, a tsvector for full text, 64-bit ids. Nothing on SQLite.

On PostgreSQL search runs in the database: `embedding` becomes pgvector's `vector` without a
fixed dimension (each model in use gets a partial HNSW index of its own, made when first
needed, so a change of model needs no schema change), and `search_text` is a generated
tsvector of the content and keywords with a GIN index. Ids become bigint, the range
DevStream accepts.

A PostgreSQL store was first possible at this revision, so no vector was ever stored there as
bytea: the column changes type without converting values.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from devstream.db import postgres

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here: a later change to the full-text configuration is a new migration.
_SEARCH_TEXT = (
    "ALTER TABLE memory_entries ADD COLUMN search_text tsvector GENERATED ALWAYS AS "
    "(to_tsvector('english'::regconfig, content || ' ' || keywords)) STORED"
)
_SEARCH_INDEX = (
    "CREATE INDEX ix_memory_entries_search_text ON memory_entries USING gin (search_text)"
)
# A task others depend on cannot be deleted (NO ACTION), but a plan's or phase's cascade
# deletes both ends of a dependency. PostgreSQL checks NO ACTION before the cascade has
# removed the dependency rows, so deletes defer this check to their end (db/queries.py);
# it stays immediate everywhere else.
_PREREQUISITE = "fk_task_dependencies_depends_on_id_micro_tasks"
# (table, column) of every id and link to one.
_IDS = (
    ("intervention_plans", "id"),
    ("phases", "id"),
    ("phases", "plan_id"),
    ("micro_tasks", "id"),
    ("micro_tasks", "phase_id"),
    ("task_dependencies", "task_id"),
    ("task_dependencies", "depends_on_id"),
    ("memory_entries", "id"),
    ("memory_entries", "plan_id"),
    ("memory_entries", "phase_id"),
    ("memory_entries", "task_id"),
    ("context_injections", "id"),
    ("context_injections", "task_id"),
    ("task_events", "id"),
    ("task_events", "task_id"),
    ("memory_changes", "seq"),
    ("memory_changes", "entry_id"),
    ("import_ledger", "source_id"),
    ("import_ledger", "target_id"),
)


def _on_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _on_postgresql():
        return
    bind = op.get_bind()
    version = int(bind.scalar(sa.text("SHOW server_version_num")) or 0)
    if version < postgres.MIN_SERVER * 10_000:
        raise postgres.server_too_old(str(bind.scalar(sa.text("SHOW server_version"))))
    row = bind.execute(sa.text(postgres.PGVECTOR_VERSIONS)).first()
    refusal = postgres.pgvector_refusal(*(row or (None, None)))
    if refusal is not None:
        raise refusal
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    for table, column in _IDS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE bigint")
    op.execute(f"ALTER TABLE task_dependencies ALTER CONSTRAINT {_PREREQUISITE} DEFERRABLE")
    op.execute("ALTER TABLE memory_entries ALTER COLUMN embedding TYPE vector USING NULL")
    # Kept in the row, uncompressed: a search reads every candidate's vector, and a
    # TOASTed one costs a second lookup per row (a 768-d vector is 3 KB of an 8 KB page).
    op.execute("ALTER TABLE memory_entries ALTER COLUMN embedding SET STORAGE PLAIN")
    op.execute(_SEARCH_TEXT)
    op.execute(_SEARCH_INDEX)


def downgrade() -> None:
    if not _on_postgresql():
        return
    op.execute("DROP INDEX ix_memory_entries_search_text")
    op.execute("ALTER TABLE memory_entries DROP COLUMN search_text")
    op.execute("ALTER TABLE memory_entries ALTER COLUMN embedding TYPE bytea USING NULL")
    op.execute(f"ALTER TABLE task_dependencies ALTER CONSTRAINT {_PREREQUISITE} NOT DEFERRABLE")
    for table, column in _IDS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE integer")
