"""Keeping an in-process index at the store's committed state.

Called inside a read transaction, so that everything it reads is one snapshot: the index
ends at exactly that state. From there it takes the cheapest way that is sound:
- already there: nothing to do;
- it applied change `seq` and the store still has that change, as it was: read the entries
  changed since and apply them (work proportional to the change);
- otherwise (never built, rolled back under it, too far behind): the index cache, when it
  matches this model and the store continues from its state, plus the changes since;
- else a rebuild from the store - rows and vectors, and FTS5's own postings - after which
  the cache is rewritten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from devstream.db import index_source as source
from devstream.memory import cache
from devstream.memory.index import IndexState, MemoryIndex

# Opens another read transaction on the store, for work that can run beside the first.
Peer = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
# Rows read per statement during a rebuild, so that their vectors pass through in slices.
REBUILD_BATCH = 8192
# More changes than this (and than this share of the rows) are cheaper as a rebuild.
MAX_CHANGES = 2_000
MAX_CHANGED_SHARE = 0.1


@dataclass(frozen=True)
class CachePolicy:
    """Where the index cache lives (None: no cache) and from what size it is worth one."""

    path: Path | None
    min_rows: int = 1_000


@dataclass(frozen=True)
class Followed:
    """What a catch-up did."""

    changes: int = 0  # entries applied from the change log
    rebuilt: bool = False
    from_cache: bool = False


async def catch_up(
    index: MemoryIndex, conn: AsyncConnection, policy: CachePolicy, peer: Peer | None = None
) -> Followed:
    """Bring `index` to the committed state `conn` reads (`peer`, when given, lets a rebuild
    read FTS5's postings on another connection meanwhile)."""
    known = index.state
    now = await source.state(conn, 0 if known is None else known.seq)
    if known is not None and (known.token, known.seq) == (now.token, now.seq):
        return Followed()
    if known is not None and now.continues(known.seq, known.seq_token):
        applied = await _apply_changes(index, conn, known, now)
        if applied is not None:
            return Followed(changes=applied)
    cached = None if policy.path is None else _cached(index, policy.path)
    if cached is not None and cached.state is not None:
        since = await source.state(conn, cached.state.seq)
        if since.continues(cached.state.seq, cached.state.seq_token):
            applied = await _apply_changes(cached, conn, cached.state, since)
            if applied is not None:
                index.replace_with(cached)
                return Followed(changes=applied, from_cache=True)
    await _rebuild(index, conn, now, peer)
    if policy.path is not None and len(index.rows) >= policy.min_rows:
        cache.save(policy.path, index)
    return Followed(rebuilt=True)


def _state(now: source.StoreState) -> IndexState:
    return IndexState(now.token, now.seq, now.seq_token)


def _cached(index: MemoryIndex, path: Path) -> MemoryIndex | None:
    return cache.load(path, index.vectors.model, index.vectors.dimension)


async def _apply_changes(
    index: MemoryIndex, conn: AsyncConnection, known: IndexState, now: source.StoreState
) -> int | None:
    """Apply the entries changed since `known`; None when that is more than a rebuild costs."""
    most = int(max(MAX_CHANGES, MAX_CHANGED_SHARE * len(index.rows)))
    vectors = index.vectors
    changed, batch = await source.changed_since(
        conn, known.seq, vectors.model, vectors.dimension, most + 1
    )
    if len(changed) > most:
        return None
    index.apply(changed, batch, _state(now))
    return len(changed)


async def _rebuild(
    index: MemoryIndex, conn: AsyncConnection, now: source.StoreState, peer: Peer | None
) -> None:
    """Rows and vectors from `conn`; FTS5's postings from a peer reading the same state
    meanwhile (SQLite builds them while this thread takes in the vectors), else after."""
    vectors = index.vectors
    fresh = MemoryIndex(vectors.model, vectors.dimension)
    postings = None if peer is None else asyncio.create_task(_postings_at(peer, now))
    try:
        fresh.reserve(await source.count(conn))
        after = 0
        while True:
            batch = await source.rows_after(
                conn, vectors.model, vectors.dimension, after, REBUILD_BATCH
            )
            if not batch.ids:
                break
            fresh.append_built(batch)
            after = batch.ids[-1]
        found = None if postings is None else await postings
    finally:
        if postings is not None:
            postings.cancel()
    fresh.finish_build(found or await source.postings(conn))
    fresh.state = _state(now)
    index.replace_with(fresh)


async def _postings_at(peer: Peer, now: source.StoreState) -> source.Postings | None:
    """FTS5's postings, read in another transaction; None unless it reads state `now`
    (every write moves the token or the change log, so equal means the same snapshot)."""
    async with peer() as other:
        there = await source.state(other, 0)
        if (there.token, there.seq) != (now.token, now.seq):
            return None
        return await source.postings(other)
