"""Initial schema: plans, phases, micro-tasks, dependencies, memory, injections, store state.

On SQLite the memory full-text index (FTS5, external content) and its triggers come too.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# External-content FTS5 over memory_entries, kept in step by triggers. Frozen here: a later
# change to the index is a new migration.
_SQLITE_FTS_UP = (
    """CREATE VIRTUAL TABLE memory_fts USING fts5(
        content, keywords,
        content='memory_entries', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2'
    )""",
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
)
_SQLITE_FTS_DOWN = (
    "DROP TRIGGER memory_entries_fts_update",
    "DROP TRIGGER memory_entries_fts_delete",
    "DROP TRIGGER memory_entries_fts_insert",
    "DROP TABLE memory_fts",
)


def _on_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    op.create_table(
        "intervention_plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('draft', 'active', 'completed', 'archived', 'cancelled')",
            name=op.f("ck_intervention_plans_status"),
        ),
        sa.CheckConstraint(
            "length(trim(title)) > 0", name=op.f("ck_intervention_plans_title_not_blank")
        ),
        sa.CheckConstraint(
            "priority BETWEEN 1 AND 10", name=op.f("ck_intervention_plans_priority")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intervention_plans")),
    )
    op.create_table(
        "store_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.String(length=64), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_store_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_state")),
    )
    op.create_table(
        "phases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'active', 'completed')", name=op.f("ck_phases_status")
        ),
        sa.CheckConstraint("length(trim(name)) > 0", name=op.f("ck_phases_name_not_blank")),
        sa.CheckConstraint("position >= 0", name=op.f("ck_phases_position")),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["intervention_plans.id"],
            name=op.f("fk_phases_plan_id_intervention_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phases")),
        sa.UniqueConstraint("plan_id", "position", name=op.f("uq_phases_plan_id_position")),
    )
    op.create_table(
        "micro_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phase_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("estimated_minutes", sa.Integer(), nullable=False),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'active', 'completed', 'failed', 'skipped')",
            name=op.f("ck_micro_tasks_status"),
        ),
        sa.CheckConstraint(
            "duration_s IS NULL OR duration_s >= 0", name=op.f("ck_micro_tasks_duration")
        ),
        sa.CheckConstraint(
            "estimated_minutes BETWEEN 1 AND 10", name=op.f("ck_micro_tasks_estimate")
        ),
        sa.CheckConstraint("length(trim(title)) > 0", name=op.f("ck_micro_tasks_title_not_blank")),
        sa.CheckConstraint("priority BETWEEN 1 AND 10", name=op.f("ck_micro_tasks_priority")),
        sa.CheckConstraint("retry_count >= 0", name=op.f("ck_micro_tasks_retry_count")),
        sa.ForeignKeyConstraint(
            ["phase_id"],
            ["phases.id"],
            name=op.f("fk_micro_tasks_phase_id_phases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_micro_tasks")),
    )
    op.create_index(
        op.f("ix_micro_tasks_phase_id_status"), "micro_tasks", ["phase_id", "status"], unique=False
    )
    op.create_table(
        "context_injections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("memory_ids", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("injected_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("tokens >= 0", name=op.f("ck_context_injections_tokens")),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["micro_tasks.id"],
            name=op.f("fk_context_injections_task_id_micro_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_context_injections")),
    )
    op.create_index(
        op.f("ix_context_injections_task_id"), "context_injections", ["task_id"], unique=False
    )
    op.create_table(
        "memory_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(length=16), nullable=False),
        sa.Column("keywords", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=True),
        sa.Column("phase_id", sa.Integer(), nullable=True),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("embedding_model", sa.String(length=100), nullable=True),
        sa.Column("embedding_dim", sa.Integer(), nullable=True),
        sa.Column("embedding_status", sa.String(length=16), nullable=False),
        sa.Column("access_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "content_type IN ('code', 'documentation', 'context', 'output', 'error', 'decision', 'learning')",
            name=op.f("ck_memory_entries_content_type"),
        ),
        sa.CheckConstraint(
            "embedding_status IN ('pending', 'embedded', 'failed')",
            name=op.f("ck_memory_entries_embedding_status"),
        ),
        sa.CheckConstraint("access_count >= 0", name=op.f("ck_memory_entries_access_count")),
        sa.CheckConstraint(
            "embedding_dim IS NULL OR embedding_dim > 0",
            name=op.f("ck_memory_entries_embedding_dim"),
        ),
        sa.CheckConstraint("length(content) > 0", name=op.f("ck_memory_entries_content_not_empty")),
        sa.ForeignKeyConstraint(
            ["phase_id"],
            ["phases.id"],
            name=op.f("fk_memory_entries_phase_id_phases"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["intervention_plans.id"],
            name=op.f("fk_memory_entries_plan_id_intervention_plans"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["micro_tasks.id"],
            name=op.f("fk_memory_entries_task_id_micro_tasks"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_entries")),
    )
    op.create_index(
        op.f("ix_memory_entries_content_hash"), "memory_entries", ["content_hash"], unique=False
    )
    op.create_index(op.f("ix_memory_entries_plan_id"), "memory_entries", ["plan_id"], unique=False)
    op.create_index(op.f("ix_memory_entries_task_id"), "memory_entries", ["task_id"], unique=False)
    op.create_table(
        "task_dependencies",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("depends_on_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("task_id <> depends_on_id", name=op.f("ck_task_dependencies_not_self")),
        sa.ForeignKeyConstraint(
            ["depends_on_id"],
            ["micro_tasks.id"],
            name=op.f("fk_task_dependencies_depends_on_id_micro_tasks"),
            ondelete="NO ACTION",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["micro_tasks.id"],
            name=op.f("fk_task_dependencies_task_id_micro_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "depends_on_id", name=op.f("pk_task_dependencies")),
    )
    op.create_index(
        op.f("ix_task_dependencies_depends_on_id"),
        "task_dependencies",
        ["depends_on_id"],
        unique=False,
    )
    if _on_sqlite():
        for statement in _SQLITE_FTS_UP:
            op.execute(statement)
    store_state = sa.table("store_state", sa.column("id", sa.Integer), sa.column("generation"))
    op.bulk_insert(store_state, [{"id": 1, "generation": secrets.token_hex(16)}])


def downgrade() -> None:
    if _on_sqlite():
        for statement in _SQLITE_FTS_DOWN:
            op.execute(statement)
    op.drop_index(op.f("ix_task_dependencies_depends_on_id"), table_name="task_dependencies")
    op.drop_table("task_dependencies")
    op.drop_index(op.f("ix_memory_entries_task_id"), table_name="memory_entries")
    op.drop_index(op.f("ix_memory_entries_plan_id"), table_name="memory_entries")
    op.drop_index(op.f("ix_memory_entries_content_hash"), table_name="memory_entries")
    op.drop_table("memory_entries")
    op.drop_index(op.f("ix_context_injections_task_id"), table_name="context_injections")
    op.drop_table("context_injections")
    op.drop_index(op.f("ix_micro_tasks_phase_id_status"), table_name="micro_tasks")
    op.drop_table("micro_tasks")
    op.drop_table("phases")
    op.drop_table("store_state")
    op.drop_table("intervention_plans")
