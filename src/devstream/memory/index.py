"""The in-process search indexes: vectors and full text over one table of rows.

An index answers for exactly one committed state of the store, named by its `IndexState`
(the store-generation token and the last change it applied); `memory.follow` moves it to
newer states. Rows built from the store or loaded from the index cache form a base, which a
cache keeps memory-mapped; entries changed since are appended as new rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from devstream.db import tokenizer
from devstream.db.index_source import IndexRows, Postings
from devstream.db.memory_store import MemoryFilter
from devstream.memory.lexical import BasePostings, LexicalIndex, base_postings
from devstream.memory.rows import Mask, Rows
from devstream.memory.vectors import CODES_FROM, RESCORED, Codes, Vector, VectorIndex


@dataclass(frozen=True)
class IndexState:
    """The committed store state an index answers for."""

    token: str  # the store-generation token
    seq: int  # the last change applied (0: none)
    seq_token: str | None  # the token under which that change was made


class MemoryIndex:
    """Vectors (of the embedder's model) and full text, at one committed store state."""

    def __init__(self, model: str, dimension: int) -> None:
        self.rows = Rows()
        self.vectors = VectorIndex(model, dimension)
        self.text = LexicalIndex(self.rows)
        self.state: IndexState | None = None  # None: never built

    def footprint(self) -> dict[str, float]:
        """Sizes for the metrics registry's gauges."""
        return {
            "entries": len(self.rows),
            "vectors": int(np.count_nonzero(self.rows.has_vector[: self.rows.size] & self.alive)),
            "vector_bytes": self.vectors.nbytes,
            "text_bytes": self.text.nbytes + self.rows.nbytes,
        }

    @property
    def alive(self) -> Mask:
        return self.rows.alive[: self.rows.size]

    def replace_with(self, other: MemoryIndex) -> None:
        """Take over another index's contents (a rebuild, or one loaded from the cache)."""
        self.rows, self.vectors, self.text = other.rows, other.vectors, other.text
        self.state = other.state

    # --- building ------------------------------------------------------------------

    def reserve(self, rows: int) -> None:
        self.vectors.reserve(rows)

    def append_built(self, batch: IndexRows) -> None:
        """Rows read in id order for a rebuild; their terms come with `finish_build`."""
        rows = self.rows.append(batch, np.zeros(len(batch.ids)))
        self.vectors.put(rows, batch.embeddings)

    def finish_build(self, postings: Postings) -> None:
        """End a rebuild: FTS5's postings for the rows built (entry ids mapped to rows, in id
        order), and the rows built made the base."""
        instances = np.fromstring(postings.docs, dtype=np.int64, sep=",")
        rows = _rows_by_id(self.rows.ids[: self.rows.size])[instances]
        base, lengths = base_postings(postings.terms, rows, postings.offsets, self.rows.size)
        self.text.base = base
        self.rows.lengths[: self.rows.size] = lengths
        self.rows.total_length = float(lengths.sum())
        self.vectors = self.vectors.based(self.rows.size)

    # --- following -----------------------------------------------------------------

    def apply(self, changed: Sequence[int], batch: IndexRows, state: IndexState) -> None:
        """Entries `changed` are now as in `batch` (an id missing there was deleted)."""
        assert batch.texts is not None, "changed rows come with their text"
        for entry_id in changed:
            self.rows.kill(entry_id)
        contents = tokenizer.index_terms([content for content, _ in batch.texts])
        keywords = tokenizer.index_terms([words for _, words in batch.texts])
        lengths = [len(a) + len(b) for a, b in zip(contents, keywords, strict=True)]
        rows = self.rows.append(batch, lengths)
        self.vectors.put(rows, batch.embeddings)
        for row, content, words in zip(rows, contents, keywords, strict=True):
            self.text.add(row, content + words)
        self.state = state

    # --- searching -----------------------------------------------------------------

    def nearest(
        self,
        unit: Vector,
        limit: int,
        allowed: Mask,
        min_similarity: float | None,
        *,
        exact: bool = False,
    ) -> list[tuple[int, float]]:
        """(row, similarity) to the unit query of the best `limit` allowed rows that pass the
        threshold: on a large store the rows best on their codes, re-scored exactly; on a
        small one, or with `exact`, every row scored exactly."""
        size = len(allowed)
        if limit <= 0 or size == 0:
            return []
        candidates = np.flatnonzero(allowed & self.rows.has_vector[:size])
        exact = exact or size < CODES_FROM
        scores = (self.vectors.cosine if exact else self.vectors.approximate)(unit, size)
        depth = limit if exact else RESCORED * limit
        if len(candidates) > depth:
            if len(candidates) < size:  # else every row is one: no copy of their scores
                scores = scores[candidates]
            candidates = candidates[np.argpartition(scores, -depth)[-depth:]]
        similarity = self.vectors.exact(unit, candidates).astype(np.float64)
        # Without a threshold, a vector candidate must at least point the same way. Compared
        # in float64, as reported: a float32 threshold would round (1e-53 to 0).
        keep = similarity > 0 if min_similarity is None else similarity >= min_similarity
        candidates, similarity = candidates[keep], similarity[keep]
        order = np.lexsort((candidates, -similarity))[:limit]
        return list(zip(candidates[order].tolist(), similarity[order].tolist(), strict=True))

    def similarity(self, unit: Vector, rows: Sequence[int]) -> dict[int, float]:
        """The query's exact cosine similarity to each of the given rows with a vector."""
        wanted = np.asarray(rows, dtype=np.int64)
        wanted = wanted[self.rows.has_vector[wanted]]
        found = self.vectors.exact(unit, wanted).tolist()
        return dict(zip(wanted.tolist(), found, strict=True))

    def entry_ids(self, rows: Sequence[int]) -> list[int]:
        ids: list[int] = self.rows.ids[np.asarray(rows, dtype=np.int64)].tolist()
        return ids

    def mask(self, filters: MemoryFilter) -> Mask:
        return self.rows.mask(filters)


def _rows_by_id(ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """A table from entry id to row, for rows built in id order (ids are dense: a table is
    one gather per instance instead of a binary search)."""
    table = np.full(int(ids[-1]) + 1 if len(ids) else 0, -1, dtype=np.int64)
    table[ids] = np.arange(len(ids))
    return table


def with_base(
    model: str,
    dimension: int,
    *,
    rows: Rows,
    vectors: Vector,
    codes: Codes,
    columns: Codes | None,
    postings: BasePostings,
    state: IndexState,
) -> MemoryIndex:
    """An index over rows loaded whole (from the cache): they and their vectors are the base."""
    index = MemoryIndex(model, dimension)
    index.rows = rows
    index.vectors = VectorIndex(model, dimension, base=vectors, codes=codes, columns=columns)
    index.text = LexicalIndex(rows, postings)
    index.state = state
    return index
