"""Hybrid search: full-text and vector rankings of the in-process indexes, fused by weighted
Reciprocal Rank Fusion, and answered for one committed state of the store.

A search first ranks on the indexes as they are and fetches the winners together with where
the store stands, in one statement: if the indexes were current the answer holds. Otherwise
(another process wrote, or this one did) it catches the indexes up to its own snapshot and
ranks again there, so every answer reflects every commit finished before the search began.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream import checks
from devstream.db import index_source, memory_store
from devstream.db.memory_store import MemoryFilter
from devstream.db.pool import ConnectionPool
from devstream.db.records import MemoryEntry
from devstream.db.tokenizer import Phrase, query_phrases
from devstream.errors import EmbeddingError, InvalidInput
from devstream.memory import cache
from devstream.memory.embedders import Embedder
from devstream.memory.filters import checked_filter
from devstream.memory.follow import CachePolicy, Followed, catch_up
from devstream.memory.fulltext import match_expression
from devstream.memory.index import MemoryIndex
from devstream.memory.lexical import Hits, phrase_hits
from devstream.memory.rows import Mask
from devstream.memory.vectors import Vector, normalise
from devstream.metrics import MetricsRegistry

RRF_K = 60
# How many candidates each side of a hybrid search contributes to the fusion.
CANDIDATES = 50
MAX_WEIGHT = 1_000.0  # of either side in the fusion
# A full-text match scoring under this share of the best one is no evidence: it holds only
# words in more than half of the store, which BM25 weighs at 1e-6. Ranked anyway, such rows
# would each earn a full RRF share and bury the row that holds the query's rare word.
TEXT_EVIDENCE = 1e-3


@dataclass(frozen=True)
class SearchWeights:
    """How much each ranked list counts in the fusion."""

    text: float = 1.0
    vector: float = 1.0


@dataclass(frozen=True)
class SearchHit:
    entry: MemoryEntry
    score: float  # fused RRF score: higher is better
    similarity: float | None  # cosine to the query; None without a vector of this model
    text_score: float | None  # bm25 score as FTS5 computes it (higher is better); None: no match


@dataclass(frozen=True)
class SearchResult:
    query: str
    hits: list[SearchHit]
    # True when the answer came from full-text alone because the query embedding failed.
    degraded: bool = False
    reason: str | None = None


class Searcher:
    """The in-process indexes of one store, how they follow it, and the searches on them."""

    def __init__(
        self,
        pool: ConnectionPool,
        metrics: MetricsRegistry,
        embedder: Embedder,
        index: MemoryIndex,
        database: Path | None,
    ) -> None:
        vectors = index.vectors
        if (vectors.model, vectors.dimension) != (embedder.model, embedder.dimension):
            raise ValueError("the memory index must be of the embedder's model and dimension")
        self._pool = pool
        self.metrics = metrics
        self.embedder = embedder
        self.index = index
        self.cache = CachePolicy(None if database is None else cache.path_for(database))
        # Catch-ups and the searches that rank right after one take turns.
        self._following = asyncio.Lock()
        # This process's write transactions begun before the index last caught up: after
        # one of its own writes a search goes straight to catching up (only a hint: the
        # fast path checks where the store stands either way).
        self._writes_seen = -1

    async def search(self, request: SearchRequest) -> SearchResult:
        """`MemoryService.search`, its arguments checked."""
        query, filters, weights, exact = (
            request.query,
            request.filters,
            request.weights,
            request.exact,
        )
        with self.metrics.timed("memory.search"):
            query_vector, reason = await embed_query(self.embedder, self.metrics, query)
            phrases = query_phrases(query)
            asked = _Query(
                query,
                phrases,
                query_vector,
                filters,
                request.min_similarity,
                weights,
                request.limit,
            )
            answer = None
            own_write = self._pool.stats.writes != self._writes_seen
            if not exact and not asked.long_phrases and not own_write:
                answer = await self._answer_if_current(asked)
            if answer is None:
                async with self._following, self._pool.read_transaction() as conn:
                    await self._catch_up(conn)
                    answer = await self._answer(asked, conn, exact=exact)
        found, scores, best, entries = answer
        return answered(
            self.metrics,
            query,
            text=found.text,
            similarity=found.similarity,
            winners=(scores, best, entries),
            reason=reason,
        )

    async def catch_up(self) -> Followed:
        """Bring the in-process indexes to the store's latest committed state."""
        async with self._following, self._pool.read_transaction() as conn:
            return await self._catch_up(conn)

    async def _catch_up(self, conn: AsyncConnection) -> Followed:
        self._writes_seen = self._pool.stats.writes
        with self.metrics.timed("memory.index.follow"):
            peer = self._pool.read_transaction if self._pool.concurrent_reads else None
            followed = await catch_up(self.index, conn, self.cache, peer)
        if followed.rebuilt or followed.from_cache:
            self.metrics.increment("memory.index.loads")
        return followed

    async def _answer_if_current(self, asked: _Query) -> _Answer | None:
        """Rank on the indexes as they are, then fetch the winners together with where the
        store stands in one statement: the answer holds if the indexes were current."""
        state = self.index.state
        if state is None:
            return None
        found, scores, best = await self._rank(asked, None, exact=False)
        async with self._pool.read_statement() as reader:
            token, seq, entries = await memory_store.fetch_with_state(reader, best)
        if (token, seq) != (state.token, state.seq):
            return None
        return found, scores, best, entries

    async def _answer(self, asked: _Query, conn: AsyncConnection, *, exact: bool) -> _Answer:
        """Rank and fetch in the caller's snapshot, which the indexes are at."""
        found, scores, best = await self._rank(asked, conn, exact=exact)
        return found, scores, best, await memory_store.fetch(conn, best)

    async def _rank(
        self, asked: _Query, conn: AsyncConnection | None, *, exact: bool
    ) -> tuple[_Candidates, dict[int, float], list[int]]:
        found = await self._candidates(asked, conn, exact=exact)
        scores, best = fused(found.text, found.vector, asked.weights, asked.limit)
        return found, scores, best

    async def _candidates(
        self, asked: _Query, conn: AsyncConnection | None, *, exact: bool
    ) -> _Candidates:
        """Each side's best CANDIDATES, and the similarity of every one that has a vector.

        Reads come first; once the indexes are consulted nothing awaits, so they cannot
        move under one ranking. With `exact` the full-text side comes from FTS5 itself;
        phrases of several terms are matched on FTS5's positions, read in `conn`.
        """
        index, filters = self.index, asked.filters
        if exact:
            assert conn is not None, "an exact search reads FTS5 in its snapshot"
            match = match_expression(asked.text)
            ranked = await memory_store.full_text(conn, match, filters, CANDIDATES) if match else []
            live = index.rows.live  # the indexes are at `conn`'s snapshot: every match is live
            text = [(live[entry_id], -rank) for entry_id, rank in ranked]  # bm25() is negated
            allowed = index.mask(filters)
        else:
            long = await self._phrase_hits(asked.long_phrases, conn)
            allowed = index.mask(filters)
            hits = [
                long[p.terms] if p.terms in long else index.text.hits(p.terms[0])
                for p in asked.phrases
            ]
            text = index.text.search(hits, CANDIDATES, allowed)
        return self._judged(asked, text, allowed, exact=exact)

    def _judged(
        self, asked: _Query, text: list[tuple[int, float]], allowed: Mask, *, exact: bool
    ) -> _Candidates:
        """The vector side's candidates beside the full-text side's (rows), the similarity
        of every one that has a vector, and all by entry id."""
        index, threshold = self.index, asked.threshold
        text_rows = [row for row, _ in text]
        vector: list[tuple[int, float]] = []
        similarity: dict[int, float] = {}
        if asked.vector is not None:
            vector = index.nearest(asked.vector, CANDIDATES, allowed, threshold, exact=exact)
            similarity = index.similarity(asked.vector, text_rows)
            similarity.update(vector)
        rows = text_rows + [row for row, _ in vector]
        id_of = dict(zip(rows, index.entry_ids(rows), strict=True))
        if threshold is not None:
            # The threshold applies to similarity: text matches without enough of it drop out
            # (entries with no vector of this model cannot be judged, so they stay).
            text = [(row, s) for row, s in text if similarity.get(row, math.inf) >= threshold]
        return _Candidates(
            [(id_of[row], score) for row, score in text],
            [(id_of[row], sim) for row, sim in vector],
            {id_of[row]: sim for row, sim in similarity.items()},
        )

    async def _phrase_hits(
        self, phrases: Sequence[Phrase], conn: AsyncConnection | None
    ) -> dict[tuple[str, ...], Hits]:
        """Rows holding each phrase of several terms, from FTS5's positions in `conn`."""
        if not phrases:
            return {}
        assert conn is not None, "phrases are matched in a snapshot the indexes are at"
        terms = sorted({term for phrase in phrases for term in phrase.terms})
        arrays = {
            term: np.fromstring(await index_source.positions(conn, term), np.int64, sep=",")
            for term in terms
        }
        return {
            p.terms: phrase_hits([arrays[term] for term in p.terms], self.index.rows)
            for p in phrases
        }


@dataclass(frozen=True)
class _Query:
    text: str
    phrases: list[Phrase]
    vector: Vector | None  # the query's, unit length; None: embedding failed, full text only
    filters: MemoryFilter
    threshold: float | None  # minimum cosine similarity
    weights: SearchWeights
    limit: int

    @property
    def long_phrases(self) -> list[Phrase]:
        """Phrases of several terms: FTS5's positions tell where they occur."""
        return [phrase for phrase in self.phrases if len(phrase.terms) > 1]


@dataclass(frozen=True)
class _Candidates:
    text: list[tuple[int, float]]  # (id, bm25 score), best first
    vector: list[tuple[int, float]]  # (id, cosine similarity), best first
    similarity: dict[int, float]


# The candidates, fused scores, winners best first, and the winners' entries.
_Answer = tuple[_Candidates, dict[int, float], list[int], dict[int, MemoryEntry]]


@dataclass(frozen=True)
class SearchRequest:
    """A search's arguments, checked."""

    query: str
    limit: int
    filters: MemoryFilter
    min_similarity: float | None
    weights: SearchWeights
    exact: bool


def checked_request(
    query: object,
    *,
    limit: object,
    filters: object,
    min_similarity: object,
    weights: object,
    exact: object,
) -> SearchRequest:
    """A search's arguments, or a typed error for the first bad one."""
    return SearchRequest(
        checks.query(query),
        checks.whole(limit, "limit", 1),
        checked_filter(filters),
        None
        if min_similarity is None
        else checks.number(min_similarity, "min_similarity", -1.0, 1.0),
        _checked_weights(weights),
        checks.flag(exact, "exact"),
    )


async def embed_query(
    embedder: Embedder, metrics: MetricsRegistry, query: str
) -> tuple[Vector | None, str | None]:
    """The query's unit vector, or None and why: a search then answers from full text."""
    try:
        with metrics.timed("memory.embed"):
            return normalise(await embedder.embed([query]))[0], None
    except EmbeddingError as exc:
        metrics.increment("memory.embed_failures")
        return None, f"answered from full-text only: {exc}"


def fused(
    text: Sequence[tuple[int, float]],
    vector: Sequence[tuple[int, float]],
    weights: SearchWeights,
    limit: int,
) -> tuple[dict[int, float], list[int]]:
    """Every candidate's fused score, and the best `limit` ids, best first. Ties go to the
    better full-text rank, then to the lower id: an exact match of an identifier, which
    this memory holds most, outweighs a similarity as high up its own list."""
    matched = evident(text)
    scores = fuse([(weights.text, matched), (weights.vector, [i for i, _ in vector])])
    text_rank = {entry_id: rank for rank, entry_id in enumerate(matched)}
    unranked = len(matched)
    best = sorted(scores, key=lambda i: (-scores[i], text_rank.get(i, unranked), i))
    return scores, best[:limit]


def evident(text: Sequence[tuple[int, float]]) -> list[int]:
    """The ids of the full-text matches, best first, that score at least TEXT_EVIDENCE of the
    best (`text` is best first)."""
    floor = text[0][1] * TEXT_EVIDENCE if text else 0.0
    return [entry_id for entry_id, score in text if score >= floor]


def answered(
    metrics: MetricsRegistry,
    query: str,
    *,
    text: Sequence[tuple[int, float]],
    similarity: dict[int, float],
    winners: tuple[dict[int, float], list[int], dict[int, MemoryEntry]],
    reason: str | None,
) -> SearchResult:
    """The result: the winners with their fused score, similarity and full-text score."""
    if reason is not None:
        metrics.increment("memory.search.degraded")
    scores, best, entries = winners
    text_scores = dict(text)
    hits = [SearchHit(entries[i], scores[i], similarity.get(i), text_scores.get(i)) for i in best]
    return SearchResult(query, hits, degraded=reason is not None, reason=reason)


def fuse(ranked: Iterable[tuple[float, Sequence[int]]], k: int = RRF_K) -> dict[int, float]:
    """Weighted RRF: each list adds weight / (k + rank) to the ids it ranks (rank from 1).

    A list of weight 0 contributes nothing, not even its ids.
    """
    scores: dict[int, float] = {}
    for weight, ids in ranked:
        if weight == 0:
            continue
        for rank, entry_id in enumerate(ids, start=1):
            scores[entry_id] = scores.get(entry_id, 0.0) + weight / (k + rank)
    return scores


def _checked_weights(weights: object) -> SearchWeights:
    if weights is None:
        return SearchWeights()
    if not isinstance(weights, SearchWeights):
        raise InvalidInput(f"weights must be SearchWeights, got {checks.shown(weights)}")
    checks.number(weights.text, "text weight", 0.0, MAX_WEIGHT)
    checks.number(weights.vector, "vector weight", 0.0, MAX_WEIGHT)
    return weights
