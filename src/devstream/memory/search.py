"""Hybrid search results and their fusion: weighted Reciprocal Rank Fusion over ranked lists."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from devstream.db.records import MemoryEntry

RRF_K = 60


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
