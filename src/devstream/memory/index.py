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

Vector = npt.NDArray[np.float32]
VECTOR_DTYPE = "<f4"  # how vectors are stored, in the database and the cache


@dataclass(frozen=True)
class IndexState:
    """The committed store state an index answers for."""

    token: str  # the store-generation token
    seq: int  # the last change applied (0: none)
    seq_token: str | None  # the token under which that change was made


def normalise(vectors: npt.ArrayLike) -> Vector:
    """Rows scaled to unit length (zero rows stay zero)."""
    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: Vector = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return unit


def encode(vector: npt.ArrayLike) -> bytes:
    """A vector as it is stored."""
    return np.asarray(vector, dtype=VECTOR_DTYPE).tobytes()


class VectorIndex:
    """Unit float32 vectors by row, searched by a matrix product: a read-only base (maybe
    memory-mapped from the cache) and appended rows after it. Rows without a vector of
    this model hold zeros and are never candidates."""

    def __init__(self, model: str, dimension: int, base: Vector | None = None) -> None:
        self.model = model
        self.dimension = dimension
        self.base: Vector = np.zeros((0, dimension), np.float32) if base is None else base
        self._added: Vector = np.zeros((0, dimension), np.float32)

    @property
    def nbytes(self) -> int:
        return self.base.nbytes + self._added.nbytes

    def reserve(self, rows: int) -> None:
        """Room for this many rows after the base, all told."""
        if rows > len(self._added):
            grown = np.zeros((rows, self.dimension), np.float32)
            grown[: len(self._added)] = self._added
            self._added = grown

    def put(self, rows: range, blobs: Sequence[bytes | None]) -> None:
        """The vectors of rows just appended (None: no vector of this model)."""
        first, end = rows.start - len(self.base), rows.stop - len(self.base)
        if end > len(self._added):
            self.reserve(max(16, 2 * len(self._added), end))
        zero = bytes(4 * self.dimension)
        raw = np.frombuffer(b"".join(blob or zero for blob in blobs), dtype=VECTOR_DTYPE)
        target = self._added[first:end]
        target[:] = raw.reshape(len(blobs), self.dimension)
        norms = np.linalg.norm(target, axis=1, keepdims=True)
        np.divide(target, norms, out=target, where=norms > 0)  # in place: no second copy

    def matrix(self, size: int) -> Vector:
        """Rows [0, size) as one matrix (the appended part copied after the base)."""
        added = self._added[: size - len(self.base)]
        return added if len(self.base) == 0 else np.concatenate([self.base, added])

    def cosine(self, query: Vector, size: int) -> npt.NDArray[np.float32]:
        """The query's cosine similarity to rows [0, size) (rows without a vector: 0)."""
        unit = normalise(query)[0]
        out = np.empty(size, dtype=np.float32)
        base = len(self.base)
        np.matmul(self.base, unit, out=out[:base])
        np.matmul(self._added[: size - base], unit, out=out[base:])
        return out


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
        """Rows read in id order for a rebuild; their terms come with `set_postings`."""
        rows = self.rows.append(batch, np.zeros(len(batch.ids)))
        self.vectors.put(rows, batch.embeddings)

    def set_postings(self, postings: Postings) -> None:
        """FTS5's postings for the rows built (entry ids mapped to rows, in id order)."""
        instances = np.fromstring(postings.docs, dtype=np.int64, sep=",")
        rows = _rows_by_id(self.rows.ids[: self.rows.size])[instances]
        base, lengths = base_postings(postings.terms, rows, postings.offsets, self.rows.size)
        self.text.base = base
        self.rows.lengths[: self.rows.size] = lengths
        self.rows.total_length = float(lengths.sum())

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

    def best_vectors(
        self,
        cosines: npt.NDArray[np.float32],
        limit: int,
        allowed: Mask,
        min_similarity: float | None,
    ) -> list[tuple[int, float]]:
        """(row, similarity) of the best `limit` allowed rows that pass the threshold."""
        if limit <= 0 or len(cosines) == 0:
            return []
        allowed = allowed & self.rows.has_vector[: len(allowed)]
        # Without a threshold, a vector candidate must at least point the same way.
        allowed &= cosines > 0 if min_similarity is None else cosines >= min_similarity
        candidates = np.flatnonzero(allowed)
        if len(candidates) > limit:
            candidates = candidates[np.argpartition(cosines[candidates], -limit)[-limit:]]
        order = candidates[np.argsort(-cosines[candidates], kind="stable")]
        return [(int(row), float(cosines[row])) for row in order]

    def entry_ids(self, rows: Sequence[int]) -> list[int]:
        ids = self.rows.ids
        return [int(ids[row]) for row in rows]

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
    postings: BasePostings,
    state: IndexState,
) -> MemoryIndex:
    """An index over rows loaded whole (from the cache): they and their vectors are the base."""
    index = MemoryIndex(model, dimension)
    index.rows = rows
    index.vectors = VectorIndex(model, dimension, base=vectors)
    index.text = LexicalIndex(rows, postings)
    index.state = state
    return index
