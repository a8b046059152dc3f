"""Hybrid search in PostgreSQL: both candidate lists and their entries in one statement.

The full-text side matches the query's phrases (each through `phraseto_tsquery`, so user
text is never tsquery syntax) against the generated `search_text` (migration 0007) and ranks
with `ts_rank`; a query word in most rows would make that rank every row, so only the
newest TEXT_POOL matches are ranked. The vector side takes the nearest rows from the model's
partial HNSW index (`ensure_vector_index`) and orders them by their exact cosine distance;
`exact` scans every vector of the model instead. The caller fuses the two lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Float,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    null,
    select,
    text,
    union,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream.db.memory_store import MemoryFilter
from devstream.db.postgres import HNSW_DEPTH, storage_error
from devstream.db.records import MemoryEntry
from devstream.db.schema import PG_VECTOR_INDEX_PREFIX, memory_entries
from devstream.db.types import PgVector
from devstream.errors import StorageBusy

TEXT_CONFIG = "english"  # the configuration of `search_text` (migration 0007)
# Matches ranked per query at most: the newest, when a word is in more rows than this.
TEXT_POOL = 1_000
# For building a vector index at least this, or the server's own setting if larger (a
# million 768-d vectors take about 4 GB: a role or database may be given more).
BUILD_MEMORY = "1GB"
# The graph: links per node and the search list of a build. pgvector's defaults (16, 64)
# reach a recall@10 of 0.81 on the benchmarks' 100k corpus, where a query's nearest rows
# stand out little; (24, 96) 0.93 and (32, 64) 0.95 at 1,000 long search lists; (32, 128)
# 0.96 at 800, for twice the build time of (32, 64) and four times that of the defaults.
GRAPH_LINKS = 32
BUILD_LIST = 128

_entries = memory_entries.c
# Whether the index exists and the planner may use it (a concurrent build in progress, or
# one cut short, leaves it invalid).
_INDEX_READY = text(
    "SELECT coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)),"
    " false)"
)
_BUILD_LOCK = "hashtextextended(:name, 0)"
_BUILD_MEMORY_SET = text(
    "SELECT set_config('maintenance_work_mem', greatest(pg_size_bytes(current_setting("
    f"'maintenance_work_mem')), pg_size_bytes('{BUILD_MEMORY}')) / 1024 || 'kB', :local)"
)
_WAIT_TO_BUILD = text(f"SELECT pg_advisory_xact_lock({_BUILD_LOCK})")
_TRY_TO_BUILD = text(f"SELECT pg_try_advisory_lock({_BUILD_LOCK})")
_DONE_BUILDING = text(f"SELECT pg_advisory_unlock({_BUILD_LOCK})")
_search_text: ColumnElement[Any] = literal_column("memory_entries.search_text")


@dataclass(frozen=True)
class Found:
    text: list[tuple[int, float]]  # (id, ts_rank), best first
    vector: list[tuple[int, float]]  # (id, cosine similarity), best first
    similarity: dict[int, float]  # every candidate's with a vector of the model
    entries: dict[int, MemoryEntry]


@dataclass(frozen=True)
class VectorIndex:
    """A model's partial HNSW index, over the vectors of that model and dimension."""

    model: str
    dimension: int

    @property
    def name(self) -> str:
        digest = hashlib.sha256(f"{self.model}\0{self.dimension}".encode()).hexdigest()[:16]
        return f"{PG_VECTOR_INDEX_PREFIX}{digest}"


@dataclass(frozen=True)
class VectorQuery:
    blob: bytes  # the query, unit length, float32
    model: str
    dimension: int

    def typed(self, column: str = "memory_entries.embedding") -> ColumnElement[bytes]:
        """The column cast to this dimension, as the partial index holds it."""
        return literal_column(f"({column}::vector({int(self.dimension)}))")

    @property
    def of_model(self) -> ColumnElement[bool]:
        """The partial index's predicate, with literals: a parameter would hide from the
        planner that a query's rows are the index's."""
        model: ColumnElement[str] = literal_column(_quoted(self.model))
        dimension: ColumnElement[int] = literal_column(str(int(self.dimension)))
        return and_(_entries.embedding_model == model, _entries.embedding_dim == dimension)


async def ensure_vector_index(conn: AsyncConnection, index: VectorIndex) -> bool:
    """Make the model's partial HNSW index (cosine) if it is missing; whether it is ready.

    Outside a transaction block the index is built CONCURRENTLY, so that writers go on: a
    plain CREATE INDEX holds off every write to the table until it ends, which at a million
    768-d vectors is most of an hour. One process builds, under a session advisory lock;
    another that finds the lock taken does not wait (False): until the index is valid the
    planner skips it and searches scan every vector. A concurrent build cut short leaves an
    invalid index, which the next build drops first; one that waits for an older transaction
    longer than lock_timeout gives up for now (False). In a transaction (a caller's, or the
    test seam's) the index is built plainly, as part of it.
    """
    name = {"name": index.name}
    if await conn.scalar(_INDEX_READY, name):
        return True
    if await _in_transaction_block(conn):
        # Two builders at once would collide (IF NOT EXISTS is no lock): the second waits
        # for the first's transaction, then finds the index.
        await conn.execute(_WAIT_TO_BUILD, name)
        if not await conn.scalar(_INDEX_READY, name):
            await conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
            await conn.execute(_BUILD_MEMORY_SET, {"local": True})
            await conn.execute(text(_create_index(index, concurrently=False)))
        return True
    if not await conn.scalar(_TRY_TO_BUILD, name):
        return False  # another process is building it
    try:
        ready = await conn.scalar(_INDEX_READY, name) or await _build_concurrently(conn, index)
    except BaseException:
        # Cut short (cancelled, or the server failed): ending the session drops its setting
        # and releases the lock, and the next build drops the invalid index left behind.
        await conn.invalidate()
        raise
    await conn.execute(_DONE_BUILDING, name)
    return bool(ready)


async def _build_concurrently(conn: AsyncConnection, index: VectorIndex) -> bool:
    """Build the index CONCURRENTLY; False if a transaction older than the build outlasted
    lock_timeout (the build waits for those; a search must not hang on an idle session)."""
    await conn.execute(_BUILD_MEMORY_SET, {"local": False})
    try:
        await conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {index.name}"))
        await conn.execute(text(_create_index(index, concurrently=True)))
    except DBAPIError as exc:
        if not isinstance(storage_error(exc.orig or exc), StorageBusy):
            raise
        built = False
    else:
        built = True
    await conn.execute(text("RESET maintenance_work_mem"))
    return built


async def _in_transaction_block(conn: AsyncConnection) -> bool:
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None, "a checked-out connection has its driver's"
    return bool(driver.is_in_transaction())


def _create_index(index: VectorIndex, *, concurrently: bool) -> str:
    # The graph is built in memory while it fits (pgvector's default, 64 MB, holds about
    # 20,000 768-d vectors; past it the build slows to a crawl).
    how = "CONCURRENTLY" if concurrently else ""
    predicate = (
        f"embedding_model = {_quoted(index.model)} AND embedding_dim = {int(index.dimension)}"
    )
    return (
        f"CREATE INDEX {how} {index.name} ON memory_entries USING hnsw "
        f"((embedding::vector({int(index.dimension)})) vector_cosine_ops) "
        f"WITH (m = {GRAPH_LINKS}, ef_construction = {BUILD_LIST}) WHERE {predicate}"
    )


async def hybrid(
    conn: AsyncConnection,
    phrases: Sequence[str],
    vector: VectorQuery | None,
    filters: MemoryFilter,
    candidates: int,
    *,
    exact: bool,
) -> Found:
    """Each side's best `candidates` and every candidate's entry, in one round trip."""
    params: dict[str, object] = {}
    text_hits = _text_side(phrases, filters, candidates, params) if phrases else None
    vector_hits = None
    if vector is not None:
        params["vector"] = vector.blob
        vector_hits = _vector_side(vector, filters, candidates, exact=exact)
    sides = [side for side in (text_hits, vector_hits) if side is not None]
    if not sides:
        return Found([], [], {}, {})
    ids = union(*[select(side.c.id) for side in sides]).subquery("candidates")
    joined = memory_entries.join(ids, ids.c.id == _entries.id)
    for side in sides:
        joined = joined.outerjoin(side, side.c.id == _entries.id)
    query = select(
        *memory_entries.c,
        _or_null(text_hits, "rank"),
        _or_null(vector_hits, "distance"),
        _similarity(vector),
    ).select_from(joined)
    rows = (await conn.execute(query, params)).all()
    return _found(rows)


def _or_null(side: CTE | None, name: str) -> ColumnElement[float]:
    return cast(null(), Float) if side is None else side.c[name]


def _text_side(
    phrases: Sequence[str], filters: MemoryFilter, candidates: int, params: dict[str, object]
) -> CTE:
    config: ColumnElement[Any] = literal_column(f"'{TEXT_CONFIG}'::regconfig")
    parts: list[ColumnElement[Any]] = []
    for n, phrase in enumerate(phrases):
        params[f"phrase_{n}"] = phrase
        parts.append(func.phraseto_tsquery(config, bindparam(f"phrase_{n}")))
    tsquery = reduce(lambda a, b: a.op("||")(b), parts)
    matches = (
        select(_entries.id, _search_text.label("search_text"))
        .where(_search_text.op("@@")(tsquery), *filters.clauses())
        .order_by(_entries.id.desc())
        .limit(TEXT_POOL)
        .subquery("matches")
    )
    rank = func.ts_rank(matches.c.search_text, tsquery, type_=Float)
    return (
        select(matches.c.id, rank.label("rank"))
        .order_by(rank.desc(), matches.c.id)
        .limit(candidates)
        .cte("text_hits")
    )


def _vector_side(
    vector: VectorQuery, filters: MemoryFilter, candidates: int, *, exact: bool
) -> CTE:
    query = bindparam("vector", type_=PgVector())
    # The operator uses the index; the function of the same distance never does.
    distance = (
        func.cosine_distance(vector.typed(), query, type_=Float)
        if exact
        else vector.typed().op("<=>", return_type=Float)(query)
    )
    nearest = (
        select(_entries.id, distance.label("distance"))
        .where(vector.of_model, *filters.clauses())
        .order_by(distance)
        .limit(candidates if exact else HNSW_DEPTH)
        .subquery("nearest")
    )
    # The index may hand rows over slightly out of order: their exact distance decides.
    return (
        select(nearest.c.id, nearest.c.distance)
        .order_by(nearest.c.distance, nearest.c.id)
        .limit(candidates)
        .cte("vector_hits")
    )


def _similarity(vector: VectorQuery | None) -> ColumnElement[float]:
    """Cosine similarity to the query, for rows with a vector of its model (else NULL)."""
    if vector is None:
        return cast(null(), Float)
    query = bindparam("vector", type_=PgVector())
    exact = 1.0 - func.cosine_distance(vector.typed(), query, type_=Float)
    return case((vector.of_model, exact), else_=None)


def _found(rows: Sequence[Sequence[Any]]) -> Found:
    width = len(memory_entries.c)
    entries: dict[int, MemoryEntry] = {}
    text_hits: list[tuple[int, float]] = []
    vector_hits: list[tuple[int, float]] = []
    similarity: dict[int, float] = {}
    for row in rows:
        entry = MemoryEntry(*row[:width])
        entries[entry.id] = entry
        rank, distance, cosine = row[width:]
        if rank is not None:
            text_hits.append((entry.id, float(rank)))
        if cosine is not None:
            similarity[entry.id] = float(cosine)
            if distance is not None:
                vector_hits.append((entry.id, float(cosine)))
    text_hits.sort(key=lambda hit: (-hit[1], hit[0]))
    vector_hits.sort(key=lambda hit: (-hit[1], hit[0]))
    return Found(text_hits, vector_hits, similarity, entries)


def _quoted(value: str) -> str:
    """A SQL string literal (every connection sets standard_conforming_strings on)."""
    return "'" + value.replace("'", "''") + "'"
