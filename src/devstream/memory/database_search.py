"""Hybrid search run by the database (PostgreSQL): no process holds a copy of the store.

Many clients on many machines share a PostgreSQL store, so each search asks the server for
both candidate lists in one statement (`devstream.db.pg_search`) and fuses them here, by the
same weighted RRF, thresholds and result shape as the in-process search on SQLite.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from devstream.db import pg_search
from devstream.db.pool import ConnectionPool
from devstream.db.tokenizer import MAX_TERMS, scrub
from devstream.memory.embedders import Embedder
from devstream.memory.follow import Followed
from devstream.memory.search import (
    CANDIDATES,
    SearchRequest,
    SearchResult,
    answered,
    embed_query,
    fused,
)
from devstream.memory.vectors import encode
from devstream.metrics import MetricsRegistry

# After a build of the vector index gave up or found another process building, how long
# this process searches without trying again: a try can wait up to lock_timeout.
BUILD_RETRY_S = 60.0


class DatabaseSearcher:
    """Searches answered by the server, in one statement each."""

    def __init__(
        self,
        pool: ConnectionPool,
        metrics: MetricsRegistry,
        embedder: Embedder,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self.metrics = metrics
        self.embedder = embedder
        self.clock = clock  # injectable: tests move time instead of waiting for it
        self._indexed = False  # whether this model's vector index is known to be ready
        self._next_try = -math.inf

    async def search(self, request: SearchRequest) -> SearchResult:
        """`MemoryService.search`, its arguments checked."""
        query = request.query
        with self.metrics.timed("memory.search"):
            unit, reason = await embed_query(self.embedder, self.metrics, query)
            vector = None
            if unit is not None:
                vector = pg_search.VectorQuery(
                    encode(unit), self.embedder.model, self.embedder.dimension
                )
                await self._ensure_index()
            async with self._pool.read_statement() as conn:
                found = await pg_search.hybrid(
                    conn, phrases(query), vector, request.filters, CANDIDATES, exact=request.exact
                )
        text, vectors = _thresholded(found, request.min_similarity)
        scores, best = fused(text, vectors, request.weights, request.limit)
        return answered(
            self.metrics,
            query,
            text=text,
            similarity=found.similarity,
            winners=(scores, best, found.entries),
            reason=reason,
        )

    async def catch_up(self) -> Followed:
        """Nothing to follow (the database answers every search as it stands), but the
        embedder's vector index is made if it is missing, as a first search would."""
        await self._ensure_index()
        return Followed()

    async def _ensure_index(self) -> None:
        if self._indexed or self.clock() < self._next_try:
            return  # until then searches take the index if it is ready, or scan
        index = pg_search.VectorIndex(self.embedder.model, self.embedder.dimension)
        async with self._pool.autocommit() as conn:
            self._indexed = await pg_search.ensure_vector_index(conn, index)
        if not self._indexed:
            self._next_try = self.clock() + BUILD_RETRY_S


def phrases(query: str) -> list[str]:
    """The query's whitespace-separated chunks, each matched as a phrase, repeats dropped."""
    return list(dict.fromkeys(scrub(query).split()))[:MAX_TERMS]


def _thresholded(
    found: pg_search.Found, min_similarity: float | None
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """The two lists as the fusion takes them: a vector candidate must at least point the
    query's way, or reach the threshold; a text match without enough similarity drops out
    (one with no vector of this model cannot be judged, so it stays)."""
    if min_similarity is None:
        return found.text, [(i, s) for i, s in found.vector if s > 0]
    sims = found.similarity
    text = [(i, r) for i, r in found.text if sims.get(i, math.inf) >= min_similarity]
    return text, [(i, s) for i, s in found.vector if s >= min_similarity]
