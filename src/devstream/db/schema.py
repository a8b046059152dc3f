"""The schema as SQLAlchemy Core tables: what the code relies on, checked against migrations.

Alembic migrations own the real DDL; a test proves the migrated database equals this metadata.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from devstream.db.types import Embedding, UTCDateTime, utcnow
from devstream.vocabulary import (
    CONTENT_TYPES,
    EMBEDDING_STATUSES,
    MAX_PRIORITY,
    MAX_SESSION_ID,
    MAX_TASK_MINUTES,
    MAX_TITLE,
    MIN_PRIORITY,
    PHASE_STATUSES,
    PLAN_STATUSES,
    TASK_STATUSES,
)

# Search objects living beside the tables, each backend's own; schema comparison ignores
# them: on SQLite the FTS5 table and its shadow tables, on PostgreSQL the tsvector column,
# its index and the vector indexes made per model (migration 0007, db/pg_search.py).
FTS_TABLE = "memory_fts"
_PG_SEARCH_OBJECTS = ("search_text", "ix_memory_entries_search_text")
PG_VECTOR_INDEX_PREFIX = "ix_memory_vectors_"


def is_fts_object(name: str | None) -> bool:
    """The FTS5 virtual table or one of its shadow tables (memory_fts_data, ...)."""
    return name is not None and (name == FTS_TABLE or name.startswith(FTS_TABLE + "_"))


# Deferrable on PostgreSQL only (migration 0007): schema comparison there leaves it out.
PREREQUISITE_FK = "fk_task_dependencies_depends_on_id_micro_tasks"


def is_search_object(name: str | None) -> bool:
    """A search object of either backend (see above)."""
    return is_fts_object(name) or (
        name is not None and (name in _PG_SEARCH_OBJECTS or name.startswith(PG_VECTOR_INDEX_PREFIX))
    )


# Ids and links to them: 64-bit on PostgreSQL (migration 0007), SQLite's INTEGER is already.
Id = Integer().with_variant(BigInteger(), "postgresql")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


_priority_range = f"priority BETWEEN {MIN_PRIORITY} AND {MAX_PRIORITY}"


def _timestamps() -> list[Column[datetime]]:
    return [
        Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
        Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
    ]


intervention_plans = Table(
    "intervention_plans",
    metadata,
    Column("id", Id, primary_key=True),
    Column("title", String(MAX_TITLE), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False, default="draft"),
    Column("priority", Integer, nullable=False, default=5),
    *_timestamps(),
    CheckConstraint("length(trim(title)) > 0", name="title_not_blank"),
    CheckConstraint(_one_of("status", PLAN_STATUSES), name="status"),
    CheckConstraint(_priority_range, name="priority"),
)

phases = Table(
    "phases",
    metadata,
    Column("id", Id, primary_key=True),
    Column(
        "plan_id",
        Id,
        ForeignKey("intervention_plans.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(MAX_TITLE), nullable=False),
    Column("position", Integer, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    *_timestamps(),
    UniqueConstraint("plan_id", "position"),
    CheckConstraint("length(trim(name)) > 0", name="name_not_blank"),
    CheckConstraint("position >= 0", name="position"),
    CheckConstraint(_one_of("status", PHASE_STATUSES), name="status"),
)

micro_tasks = Table(
    "micro_tasks",
    metadata,
    Column("id", Id, primary_key=True),
    Column("phase_id", Id, ForeignKey("phases.id", ondelete="CASCADE"), nullable=False),
    Column("title", String(MAX_TITLE), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False, default="pending"),
    Column("priority", Integer, nullable=False, default=5),
    Column("estimated_minutes", Integer, nullable=False, default=5),
    Column("retry_count", Integer, nullable=False, default=0),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("completed_at", UTCDateTime(), nullable=True),
    Column("duration_s", Float, nullable=True),
    *_timestamps(),
    # The assistant session holding the task while it is active (migration 0005).
    Column("session_id", String(MAX_SESSION_ID), nullable=True, index=True),
    CheckConstraint("length(trim(title)) > 0", name="title_not_blank"),
    CheckConstraint(_one_of("status", TASK_STATUSES), name="status"),
    CheckConstraint(_priority_range, name="priority"),
    CheckConstraint(f"estimated_minutes BETWEEN 1 AND {MAX_TASK_MINUTES}", name="estimate"),
    CheckConstraint("retry_count >= 0", name="retry_count"),
    CheckConstraint("duration_s IS NULL OR duration_s >= 0", name="duration"),
    Index(None, "phase_id", "status"),
)

# Deleting a task others depend on is refused (NO ACTION: checked at statement end, so a
# plan's cascade can remove both ends of a dependency in one statement).
task_dependencies = Table(
    "task_dependencies",
    metadata,
    Column(
        "task_id",
        Id,
        ForeignKey("micro_tasks.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "depends_on_id",
        Id,
        ForeignKey("micro_tasks.id", ondelete="NO ACTION"),
        primary_key=True,
    ),
    Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
    CheckConstraint("task_id <> depends_on_id", name="not_self"),
    Index(None, "depends_on_id"),
)

# Memories outlive the work they came from: their links are cleared, not cascaded.
memory_entries = Table(
    "memory_entries",
    metadata,
    Column("id", Id, primary_key=True),
    Column("content", Text, nullable=False),
    Column("content_type", String(16), nullable=False),
    Column("keywords", Text, nullable=False, default=""),
    Column("content_hash", String(64), nullable=False),
    Column(
        "plan_id",
        Id,
        ForeignKey("intervention_plans.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("phase_id", Id, ForeignKey("phases.id", ondelete="SET NULL"), nullable=True),
    Column("task_id", Id, ForeignKey("micro_tasks.id", ondelete="SET NULL"), nullable=True),
    Column("embedding", Embedding, nullable=True),
    Column("embedding_model", String(100), nullable=True),
    Column("embedding_dim", Integer, nullable=True),
    Column("embedding_status", String(16), nullable=False, default="pending"),
    Column("access_count", Integer, nullable=False, default=0),
    *_timestamps(),
    # Failed attempts to embed this content on its own, and the last one's reason.
    Column("embedding_attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("embedding_error", Text, nullable=True),
    CheckConstraint("length(content) > 0", name="content_not_empty"),
    CheckConstraint(_one_of("content_type", CONTENT_TYPES), name="content_type"),
    CheckConstraint(_one_of("embedding_status", EMBEDDING_STATUSES), name="embedding_status"),
    CheckConstraint("access_count >= 0", name="access_count"),
    CheckConstraint("embedding_dim IS NULL OR embedding_dim > 0", name="embedding_dim"),
    Index(None, "content_hash"),
    Index(None, "task_id"),
    Index(None, "plan_id"),
    # A deleted memory's id is never given again (migration 0009); PostgreSQL's never are.
    sqlite_autoincrement=True,
)

context_injections = Table(
    "context_injections",
    metadata,
    Column("id", Id, primary_key=True),
    Column("task_id", Id, ForeignKey("micro_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("memory_ids", Text, nullable=False, default="[]"),
    Column("tokens", Integer, nullable=False, default=0),
    Column("injected_at", UTCDateTime(), nullable=False, default=utcnow),
    CheckConstraint("tokens >= 0", name="tokens"),
    Index(None, "task_id"),
)

# Every status change of a task, in order: transition counts and history survive the process.
task_events = Table(
    "task_events",
    metadata,
    Column("id", Id, primary_key=True),
    Column("task_id", Id, ForeignKey("micro_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("from_status", String(16), nullable=False),
    Column("to_status", String(16), nullable=False),
    Column("at", UTCDateTime(), nullable=False, default=utcnow),
    CheckConstraint(_one_of("from_status", TASK_STATUSES), name="from_status"),
    CheckConstraint(_one_of("to_status", TASK_STATUSES), name="to_status"),
    Index(None, "task_id"),
)

store_state = Table(
    "store_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("generation", String(64), nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

# One row per change to a memory entry, written by triggers in the changing transaction
# (migration 0003); the in-process indexes catch up by reading what follows their last seq.
memory_changes = Table(
    "memory_changes",
    metadata,
    Column("seq", Id, primary_key=True),
    Column("entry_id", Id, nullable=False),
    Column("generation", String(64), nullable=False),
)

# Rows of an export already imported, and the ids they got here (migration 0006): an import
# writes a batch and its entries in one transaction, so a rerun skips what is done.
import_ledger = Table(
    "import_ledger",
    metadata,
    Column("export_id", String(36), primary_key=True),
    Column("kind", String(24), primary_key=True),
    Column("source_id", Id, primary_key=True),
    Column("target_id", Id, nullable=False),
)
