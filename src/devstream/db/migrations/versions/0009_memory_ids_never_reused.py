"""SQLite: a deleted memory's id is never given to another. Nothing on PostgreSQL.

SQLite gives a new row the largest id in the table plus one, so deleting the newest memory
freed its id for the next: a context injection that named it, or a client that kept it,
then found another memory under it. AUTOINCREMENT makes ids only grow, and it can only be
declared as a table is made, so `memory_entries` is made again with it and its rows copied
as they are (ids included; the full-text index's rows follow ids, so it stays valid). The
ids already freed are known from the change log, which records every deletion: the
sequence starts past them. Dropping the old table drops its indexes and triggers, which are
made again as migrations 0001 and 0003 made them (frozen here).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The table as migrations 0001 and 0004 left it, but for how its id is declared.
_COLUMNS = """
    content TEXT NOT NULL,
    content_type VARCHAR(16) NOT NULL,
    keywords TEXT NOT NULL,
    content_hash VARCHAR(64) NOT NULL,
    plan_id INTEGER,
    phase_id INTEGER,
    task_id INTEGER,
    embedding BLOB,
    embedding_model VARCHAR(100),
    embedding_dim INTEGER,
    embedding_status VARCHAR(16) NOT NULL,
    access_count INTEGER NOT NULL,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    embedding_attempts INTEGER DEFAULT '0' NOT NULL,
    embedding_error TEXT,
    CONSTRAINT ck_memory_entries_content_type CHECK (content_type IN ('code', 'documentation',
        'context', 'output', 'error', 'decision', 'learning')),
    CONSTRAINT ck_memory_entries_embedding_status CHECK (embedding_status IN ('pending',
        'embedded', 'failed')),
    CONSTRAINT ck_memory_entries_access_count CHECK (access_count >= 0),
    CONSTRAINT ck_memory_entries_embedding_dim CHECK (embedding_dim IS NULL OR embedding_dim > 0),
    CONSTRAINT ck_memory_entries_content_not_empty CHECK (length(content) > 0),
    CONSTRAINT fk_memory_entries_phase_id_phases FOREIGN KEY(phase_id)
        REFERENCES phases (id) ON DELETE SET NULL,
    CONSTRAINT fk_memory_entries_plan_id_intervention_plans FOREIGN KEY(plan_id)
        REFERENCES intervention_plans (id) ON DELETE SET NULL,
    CONSTRAINT fk_memory_entries_task_id_micro_tasks FOREIGN KEY(task_id)
        REFERENCES micro_tasks (id) ON DELETE SET NULL
"""
_ID = "id INTEGER NOT NULL CONSTRAINT pk_memory_entries PRIMARY KEY"
# Every column, in the table's order (named: a copy must not lean on the order alone).
_ALL = (
    "id, content, content_type, keywords, content_hash, plan_id, phase_id, task_id, "
    "embedding, embedding_model, embedding_dim, embedding_status, access_count, created_at, "
    "updated_at, embedding_attempts, embedding_error"
)

_CHANGED = (
    "content, content_type, keywords, plan_id, phase_id, task_id, embedding, "
    "embedding_model, embedding_dim, embedding_status, created_at"
)
_LOG = (
    "INSERT INTO memory_changes(entry_id, generation) "
    "VALUES ({row}.id, (SELECT generation FROM store_state WHERE id = 1));"
)
_INDEXES_AND_TRIGGERS = (
    "CREATE INDEX ix_memory_entries_content_hash ON memory_entries (content_hash)",
    "CREATE INDEX ix_memory_entries_plan_id ON memory_entries (plan_id)",
    "CREATE INDEX ix_memory_entries_task_id ON memory_entries (task_id)",
    """CREATE TRIGGER memory_entries_fts_insert AFTER INSERT ON memory_entries BEGIN
        INSERT INTO memory_fts(rowid, content, keywords)
        VALUES (new.id, new.content, new.keywords);
    END""",
    """CREATE TRIGGER memory_entries_fts_delete AFTER DELETE ON memory_entries BEGIN
        INSERT INTO memory_fts(memory_fts, rowid, content, keywords)
        VALUES ('delete', old.id, old.content, old.keywords);
    END""",
    """CREATE TRIGGER memory_entries_fts_update AFTER UPDATE OF content, keywords
    ON memory_entries BEGIN
        INSERT INTO memory_fts(memory_fts, rowid, content, keywords)
        VALUES ('delete', old.id, old.content, old.keywords);
        INSERT INTO memory_fts(rowid, content, keywords)
        VALUES (new.id, new.content, new.keywords);
    END""",
    f"""CREATE TRIGGER memory_changes_insert AFTER INSERT ON memory_entries BEGIN
        {_LOG.format(row="new")}
    END""",
    f"""CREATE TRIGGER memory_changes_update AFTER UPDATE OF {_CHANGED}
    ON memory_entries BEGIN
        {_LOG.format(row="new")}
    END""",
    f"""CREATE TRIGGER memory_changes_delete AFTER DELETE ON memory_entries BEGIN
        {_LOG.format(row="old")}
    END""",
)
# Past every id in use, and every deleted one still named somewhere: in the change log
# (which keeps the last 100,000 changes), a context injection, or an import's ledger.
_SEQUENCE_PAST_FREED = """
INSERT INTO sqlite_sequence(name, seq) SELECT 'memory_entries', max(
    coalesce((SELECT max(id) FROM memory_entries), 0),
    coalesce((SELECT max(entry_id) FROM memory_changes), 0),
    coalesce((SELECT max(named.value) FROM context_injections,
              json_each(context_injections.memory_ids) AS named), 0),
    coalesce((SELECT max(target_id) FROM import_ledger WHERE kind = 'memory'), 0))
"""


def _remake(growing: bool) -> None:
    declared = f"{_ID} AUTOINCREMENT" if growing else _ID
    op.execute(f"CREATE TABLE memory_entries_remade ({declared}, {_COLUMNS})")
    op.execute(f"INSERT INTO memory_entries_remade ({_ALL}) SELECT {_ALL} FROM memory_entries")
    op.execute("DROP TABLE memory_entries")
    op.execute("ALTER TABLE memory_entries_remade RENAME TO memory_entries")
    for statement in _INDEXES_AND_TRIGGERS:
        op.execute(statement)
    op.execute("DELETE FROM sqlite_sequence WHERE name = 'memory_entries'")


def _on_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    if _on_sqlite():
        _remake(growing=True)
        op.execute(_SEQUENCE_PAST_FREED)


def downgrade() -> None:
    if _on_sqlite():
        _remake(growing=False)
