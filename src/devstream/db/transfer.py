"""The statements export and import need: every row of a table in a stable order, ids for
rows about to be written, and the import ledger.

Rows are read and written as plain column mappings; `devstream.transfer` decides what goes
into a file and what an import may write. Memory rows are written through
`memory_store.insert`, which keeps each row's hash consistent with its content.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, func, insert, literal, select, text, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream.db import memory_store
from devstream.db.schema import (
    context_injections,
    import_ledger,
    intervention_plans,
    memory_entries,
    micro_tasks,
    phases,
    task_dependencies,
    task_events,
)
from devstream.errors import StorageBusy

# The kinds of record an export holds, in the order it holds them: each kind's links point
# only to kinds before it (a context injection names memories, so it comes last).
TABLES: dict[str, Table] = {
    "plan": intervention_plans,
    "phase": phases,
    "task": micro_tasks,
    "dependency": task_dependencies,
    "task_event": task_events,
    "memory": memory_entries,
    "context_injection": context_injections,
}
# A memory's vector and what the store knows about embedding it: exported on request only.
EMBEDDING_COLUMNS = (
    "embedding",
    "embedding_model",
    "embedding_dim",
    "embedding_status",
    "embedding_attempts",
    "embedding_error",
)
Key = tuple[int, ...]  # a row's position in the stable order: its id, or its primary key


async def rows_after(
    conn: AsyncConnection, kind: str, after: Key | None, limit: int, *, embeddings: bool
) -> list[dict[str, Any]]:
    """Up to `limit` rows of a kind past `after` in primary-key order (memories without
    their embedding columns unless `embeddings`)."""
    table = TABLES[kind]
    key = list(table.primary_key.columns)
    columns = [
        column
        for column in table.columns
        if embeddings or kind != "memory" or column.name not in EMBEDDING_COLUMNS
    ]
    query = select(*columns).order_by(*key).limit(limit)
    if after is not None:
        query = query.where(tuple_(*key) > tuple_(*(literal(value) for value in after)))
    return [dict(row._mapping) for row in await conn.execute(query)]


def key_of(kind: str, row: dict[str, Any]) -> Key:
    return tuple(int(row[column.name]) for column in TABLES[kind].primary_key.columns)


# On SQLite: the largest id in use, or given by AUTOINCREMENT, of each table.
_LAST_ID = {
    table.name: text(
        f"SELECT max(coalesce((SELECT max(id) FROM {table.name}), 0), coalesce((SELECT seq "
        f"FROM sqlite_sequence WHERE name = '{table.name}'), 0))"
    )
    for table in TABLES.values()
    if "id" in table.c
}


async def new_ids(conn: AsyncConnection, kind: str, count: int) -> list[int]:
    """Ids for `count` new rows of a kind: on SQLite (whose writers take turns) past every row
    there is and, for a table that never gives an id twice, past every id it gave (migration
    0009); from the table's sequence on PostgreSQL, where others insert meanwhile."""
    if count == 0:
        return []
    table = TABLES[kind]
    if conn.dialect.name == "sqlite":
        last = await conn.scalar(_LAST_ID[table.name])
        return list(range(int(last or 0) + 1, int(last or 0) + 1 + count))
    taken = func.nextval(func.pg_get_serial_sequence(table.name, "id"))
    drawn = await conn.execute(select(taken).select_from(func.generate_series(1, count)))
    return [int(value) for value in drawn.scalars()]


async def refresh_statistics(conn: AsyncConnection) -> None:
    """After many rows came in: PostgreSQL plans a search on its tables' statistics, which
    autovacuum would refresh only later (until then, the first searches after an import
    of 100,000 memories took 240 ms instead of 37). SQLite's in-process search needs none."""
    if conn.dialect.name != "sqlite":
        await conn.execute(text("ANALYZE"))


async def write(conn: AsyncConnection, kind: str, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows of a kind with the ids and values they carry."""
    if not rows:
        return
    if kind == "memory":
        await memory_store.insert_quietly(conn, rows)
    else:
        await conn.execute(insert(TABLES[kind]), list(rows))


async def existing_dependencies(
    conn: AsyncConnection, edges: Sequence[tuple[int, int]]
) -> set[tuple[int, int]]:
    """Which of these (task, depends on) edges the store already has."""
    if not edges:
        return set()
    pair = tuple_(task_dependencies.c.task_id, task_dependencies.c.depends_on_id)
    query = select(task_dependencies.c.task_id, task_dependencies.c.depends_on_id).where(
        pair.in_(list(edges))
    )
    return {(int(a), int(b)) for a, b in await conn.execute(query)}


async def imported(conn: AsyncConnection, export_id: str) -> dict[str, dict[int, int]]:
    """What earlier runs of this import wrote or matched: kind -> source id -> id here."""
    ledger = import_ledger.c
    query = select(ledger.kind, ledger.source_id, ledger.target_id).where(
        ledger.export_id == export_id
    )
    found: dict[str, dict[int, int]] = {}
    for kind, source_id, target_id in await conn.execute(query):
        found.setdefault(kind, {})[int(source_id)] = int(target_id)
    return found


async def remember(
    conn: AsyncConnection, export_id: str, kind: str, mapped: dict[int, int]
) -> None:
    """Ledger entries for rows just imported (or matched) in this transaction. Entries there
    already mean that another import of the same export wrote these rows since this one
    read the ledger: StorageBusy, and the transaction's rows are rolled back."""
    if not mapped:
        return
    try:
        await conn.execute(
            insert(import_ledger),
            [
                {"export_id": export_id, "kind": kind, "source_id": a, "target_id": b}
                for a, b in mapped.items()
            ],
        )
    except IntegrityError as exc:
        raise StorageBusy(
            "another import of this export wrote the same rows meanwhile",
            hint="run the import again once the other has ended: it resumes, adding nothing twice",
        ) from exc
