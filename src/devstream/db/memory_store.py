"""Memory storage: the statements the memory service needs beyond plain create/get/update.

Filters, deduplication, full-text matching, vector loading and embedding bookkeeping - all
SQL about memories lives here, in SQLAlchemy Core.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    and_,
    bindparam,
    case,
    column,
    delete,
    func,
    literal_column,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream.db.records import MemoryEntry
from devstream.db.schema import FTS_TABLE, memory_changes, memory_entries, store_state
from devstream.db.sqlite import DriverQuery
from devstream.db.types import utcnow

# The FTS5 table as a lightweight construct: only its rowid is selected or joined.
_fts = table(FTS_TABLE, column("rowid", Integer))


@dataclass(frozen=True)
class MemoryFilter:
    """Which memories a list or search may return; empty means all."""

    content_types: frozenset[str] = field(default_factory=frozenset)
    plan_id: int | None = None
    phase_id: int | None = None
    task_id: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    embedding_status: str | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        """The WHERE conditions on memory_entries."""
        found: list[ColumnElement[bool]] = []
        if self.content_types:
            found.append(memory_entries.c.content_type.in_(sorted(self.content_types)))
        for link, value in (
            (memory_entries.c.plan_id, self.plan_id),
            (memory_entries.c.phase_id, self.phase_id),
            (memory_entries.c.task_id, self.task_id),
            (memory_entries.c.embedding_status, self.embedding_status),
        ):
            if value is not None:
                found.append(link == value)
        if self.created_after is not None:
            found.append(memory_entries.c.created_at >= self.created_after)
        if self.created_before is not None:
            found.append(memory_entries.c.created_at < self.created_before)
        return found


@dataclass(frozen=True)
class Scope:
    """The plan / phase / task a memory belongs to; deduplication happens within one."""

    plan_id: int | None = None
    phase_id: int | None = None
    task_id: int | None = None


def _record(row: Any) -> MemoryEntry:
    # Positional: MemoryEntry's fields are the table's columns, in order (a unit test holds
    # them together), and a mapping per row costs more than the query on small results.
    return MemoryEntry(*row)


async def by_hashes(conn: AsyncConnection, hashes: Sequence[str]) -> list[MemoryEntry]:
    """Every entry with one of these content hashes, in any scope."""
    if not hashes:
        return []
    return [_record(row) for row in await conn.execute(_BY_HASHES, {"hashes": list(hashes)})]


# A new memory's columns, as the store function takes them (migration 0008), and the ones
# deduplication compares.
_STORE_COLUMNS = (
    "content",
    "content_type",
    "keywords",
    "content_hash",
    "plan_id",
    "phase_id",
    "task_id",
    "embedding",
    "embedding_model",
    "embedding_dim",
    "embedding_status",
)
_KEY = ("content_hash", "plan_id", "phase_id", "task_id")
# Sent as the driver's own SQL: compiling and typing it through SQLAlchemy cost the client
# about 0.1 ms of CPU a store. Its timestamps come back as asyncpg gives them, aware UTC.
_STORE_CALL = (
    "SELECT s.created, "
    + ", ".join(f"(s.entry).{c.name}" for c in memory_entries.c)
    + " FROM devstream_store_memories("
    + ", ".join(f"${n}" for n in range(1, len(_STORE_COLUMNS) + 2))
    + ") AS s"
)
# Built once: every store runs these, and building a statement costs more than running it.
_BY_HASHES = select(memory_entries).where(
    memory_entries.c.content_hash.in_(bindparam("hashes", expanding=True))
)
_INSERT = memory_entries.insert().returning(*memory_entries.c)
_BY_IDS = select(memory_entries).where(memory_entries.c.id.in_(bindparam("ids", expanding=True)))
# One row per entry found, or a single row of NULLs when none is: where the store stands (its
# token and newest change) always comes back. Ids go in as one JSON array, so the
# statement's text never changes.
_NEWEST_CHANGE = select(func.coalesce(func.max(memory_changes.c.seq), 0)).scalar_subquery()
_BY_IDS_WITH_STATE = DriverQuery(
    select(store_state.c.generation, _NEWEST_CHANGE, *memory_entries.c).select_from(
        store_state.outerjoin(
            memory_entries,
            memory_entries.c.id.in_(
                select(column("value")).select_from(func.json_each(bindparam("ids")))
            ),
        )
    )
)


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()


# What a row holds about its vector: new content without a vector of its own has none.
_NO_VECTOR: dict[str, Any] = {
    "embedding": None,
    "embedding_model": None,
    "embedding_dim": None,
    "embedding_status": "pending",
    "embedding_attempts": 0,
    "embedding_error": None,
}


def _consistent(values: dict[str, Any]) -> dict[str, Any]:
    """The values with what new content implies and they do not say: its own hash, and no
    vector of the old. (The memory service passes both: its rows are hashed once.)"""
    if "content" not in values:
        return values
    implied: dict[str, Any] = {} if "embedding" in values else dict(_NO_VECTOR)
    if "content_hash" not in values:
        implied["content_hash"] = content_hash(values["content"])
    return implied | values


async def insert(conn: AsyncConnection, values: Sequence[dict[str, Any]]) -> list[MemoryEntry]:
    """Insert entries; returns them, in no particular order. Every write of a memory row
    goes through here, `insert_quietly` or `update_entry`, which keep the hash and the
    vector consistent with the content, or through `store_new`, whose callers pass both."""
    result = await conn.execute(_INSERT, _new_rows(values))
    return [_record(row) for row in result]


async def store_new(
    conn: AsyncConnection, values: Sequence[dict[str, Any]]
) -> tuple[list[MemoryEntry], list[MemoryEntry]]:
    """Insert the new memories whose content is not stored in their scope yet: (entries
    stored before with one of these contents, in any scope; entries inserted now).

    `values` hold a new memory's columns (`_STORE_COLUMNS`), one per content and scope. On
    PostgreSQL, where writers store at once, one statement locks the contents, looks and
    inserts (migration 0008), so concurrent stores of one content keep one; SQLite's
    writers take turns.
    """
    if not values:
        return [], []
    if conn.dialect.name == "sqlite":
        return await _look_then_insert(conn, values)
    arrays = [[value[name] for value in values] for name in _STORE_COLUMNS]
    rows = (await conn.exec_driver_sql(_STORE_CALL, (utcnow(), *arrays))).all()
    return [_record(row[1:]) for row in rows if not row[0]], [
        _record(row[1:]) for row in rows if row[0]
    ]


async def _look_then_insert(
    conn: AsyncConnection, values: Sequence[dict[str, Any]]
) -> tuple[list[MemoryEntry], list[MemoryEntry]]:
    existing = await by_hashes(conn, sorted({value["content_hash"] for value in values}))
    stored = {tuple(getattr(entry, name) for name in _KEY) for entry in existing}
    rows = [value for value in values if tuple(value[name] for name in _KEY) not in stored]
    return existing, await insert(conn, rows) if rows else []


async def insert_quietly(conn: AsyncConnection, values: Sequence[dict[str, Any]]) -> None:
    """`insert` for a caller that needs nothing back (an import): no row, blobs included,
    is sent back, and the driver inserts the batch in one go."""
    await conn.execute(memory_entries.insert(), _new_rows(values))


def _new_rows(values: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    now = utcnow()
    return [{"created_at": now, "updated_at": now, **_consistent(value)} for value in values]


async def get(conn: AsyncConnection, entry_id: int) -> MemoryEntry | None:
    row = (
        await conn.execute(select(memory_entries).where(memory_entries.c.id == entry_id))
    ).first()
    return None if row is None else _record(row)


async def update_entry(
    conn: AsyncConnection, entry_id: int, values: dict[str, Any]
) -> MemoryEntry | None:
    statement = (
        update(memory_entries)
        .where(memory_entries.c.id == entry_id)
        .values(**_consistent(values), updated_at=utcnow())
    )
    row = (await conn.execute(statement.returning(*memory_entries.c))).first()
    return None if row is None else _record(row)


async def delete_entry(conn: AsyncConnection, entry_id: int) -> bool:
    result = await conn.execute(delete(memory_entries).where(memory_entries.c.id == entry_id))
    return bool(result.rowcount)


async def touch(conn: AsyncConnection, ids: Sequence[int]) -> None:
    """Count a retrieval of each entry. The rows are locked in id order first: two
    PostgreSQL transactions counting the same entries found in other orders deadlocked."""
    if ids:
        entry = memory_entries.c.id
        in_order = select(entry).where(entry.in_(ids)).order_by(entry).with_for_update()
        await conn.execute(
            update(memory_entries)
            .where(entry.in_(in_order.scalar_subquery()))
            .values(access_count=memory_entries.c.access_count + 1)
        )


async def list_entries(
    conn: AsyncConnection, filters: MemoryFilter, *, limit: int | None, offset: int
) -> list[MemoryEntry]:
    query = (
        select(memory_entries)
        .where(*filters.clauses())
        .order_by(memory_entries.c.id)
        .limit(limit)
        .offset(offset)
    )
    return [_record(row) for row in await conn.execute(query)]


async def fetch_with_state(
    conn: AsyncConnection, ids: Sequence[int]
) -> tuple[str, int, dict[int, MemoryEntry]]:
    """The store-generation token, the newest change and the entries with these ids, in
    one statement."""
    rows = await _BY_IDS_WITH_STATE.all(conn, ids=json.dumps(list(ids)))
    entries = {row[2]: MemoryEntry(*row[2:]) for row in rows if row[2] is not None}
    return rows[0][0], int(rows[0][1]), entries


async def fetch(conn: AsyncConnection, ids: Sequence[int]) -> dict[int, MemoryEntry]:
    rows = await conn.execute(_BY_IDS, {"ids": list(ids)})
    return {row.id: _record(row) for row in rows}


async def full_text(
    conn: AsyncConnection, match: str, filters: MemoryFilter, limit: int
) -> list[tuple[int, float]]:
    """(id, bm25 rank) of the best full-text matches; lower rank is better."""
    rank: ColumnElement[float] = literal_column("bm25(memory_fts)")
    query = (
        select(_fts.c.rowid, rank)
        .select_from(_fts.join(memory_entries, memory_entries.c.id == _fts.c.rowid))
        .where(literal_column(FTS_TABLE).op("MATCH")(match), *filters.clauses())
        .order_by(rank)
        .limit(limit)
    )
    return [(int(row[0]), float(row[1])) for row in await conn.execute(query)]


def _needs_embedding(model: str, dimension: int, *, other_models: bool) -> ColumnElement[bool]:
    pending = (
        memory_entries.c.embedding_status == "pending"
    )  # a failed one waits for --retry-failed
    if not other_models:
        return pending
    foreign = or_(
        memory_entries.c.embedding_model != model, memory_entries.c.embedding_dim != dimension
    )
    return or_(pending, and_(memory_entries.c.embedding_status == "embedded", foreign))


async def awaiting_embedding(
    conn: AsyncConnection,
    model: str,
    dimension: int,
    *,
    other_models: bool,
    after_id: int,
    limit: int,
) -> list[tuple[int, str]]:
    """(id, content) of entries to embed: pending ones, plus other models' when asked."""
    query = (
        select(memory_entries.c.id, memory_entries.c.content)
        .where(
            _needs_embedding(model, dimension, other_models=other_models),
            memory_entries.c.id > after_id,
        )
        .order_by(memory_entries.c.id)
        .limit(limit)
    )
    return [(row.id, row.content) for row in await conn.execute(query)]


async def count_awaiting(
    conn: AsyncConnection, model: str, dimension: int, *, other_models: bool
) -> int:
    query = select(func.count()).where(
        _needs_embedding(model, dimension, other_models=other_models)
    )
    return int(await conn.scalar(query) or 0)


async def set_embeddings(
    conn: AsyncConnection, model: str, dimension: int, blobs: dict[int, bytes]
) -> None:
    if not blobs:
        return
    statement = (
        update(memory_entries)
        .where(memory_entries.c.id == bindparam("entry_id"))
        .values(
            embedding=bindparam("blob"),
            embedding_model=model,
            embedding_dim=dimension,
            embedding_status="embedded",
            embedding_attempts=0,
            embedding_error=None,
            updated_at=utcnow(),
        )
    )
    await conn.execute(
        statement, [{"entry_id": entry_id, "blob": blob} for entry_id, blob in blobs.items()]
    )


async def record_failures(conn: AsyncConnection, reasons: dict[int, str], limit: int) -> None:
    """Count a failed attempt at embedding each entry on its own, keeping the reason; at
    `limit` failed attempts an entry is marked failed."""
    if not reasons:
        return
    attempts = memory_entries.c.embedding_attempts + 1
    statement = (
        update(memory_entries)
        .where(memory_entries.c.id == bindparam("entry_id"))
        .values(
            embedding_attempts=attempts,
            embedding_error=bindparam("reason"),
            embedding_status=case(
                (attempts >= limit, "failed"), else_=memory_entries.c.embedding_status
            ),
            updated_at=utcnow(),
        )
    )
    rows = [{"entry_id": entry_id, "reason": reason} for entry_id, reason in reasons.items()]
    await conn.execute(statement, rows)


async def retry_failed(conn: AsyncConnection) -> int:
    """Entries marked failed wait to be embedded again, their attempts forgotten."""
    statement = (
        update(memory_entries)
        .where(memory_entries.c.embedding_status == "failed")
        .values(embedding_status="pending", embedding_attempts=0, updated_at=utcnow())
    )
    return (await conn.execute(statement)).rowcount


async def counts(conn: AsyncConnection) -> dict[str, dict[str, int]]:
    """Entries by content type and by embedding status."""
    found: dict[str, dict[str, int]] = {}
    for name in ("content_type", "embedding_status"):
        column = memory_entries.c[name]
        query = select(column, func.count()).group_by(column).order_by(column)
        found[f"by_{name}"] = {row[0]: int(row[1]) for row in await conn.execute(query)}
    return found
