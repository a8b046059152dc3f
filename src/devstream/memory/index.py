"""The in-process search indexes: vectors and full text, kept at one store generation.

Both are built from the store on first use and updated in place by this process's own
writes. They remember the store-generation token they match; any other token means the
store changed behind their back (another process, or a rolled-back transaction) and they
are rebuilt before they answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from devstream.db.memory_store import MemoryFilter, SnapshotRow
from devstream.db.records import MemoryEntry
from devstream.memory.lexical import LexicalIndex
from devstream.memory.rows import RowMeta, Rows

Vector = npt.NDArray[np.float32]


def normalise(vectors: npt.ArrayLike) -> Vector:
    """Rows scaled to unit length (zero rows stay zero)."""
    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: Vector = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return unit


class VectorIndex:
    """L2-normalised float32 rows of one model and dimension, searched by a matrix product."""

    def __init__(self, model: str, dimension: int) -> None:
        self.model = model
        self.dimension = dimension
        self.rows = Rows()
        self._matrix: Vector = np.zeros((0, dimension), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def matrix(self) -> Vector:
        """The unit vectors of live entries, one row each (a copy)."""
        size = self.rows.size
        live: Vector = self._matrix[:size][self.rows.alive[:size]]
        return live

    @property
    def nbytes(self) -> int:
        return self._matrix.nbytes + self.rows.nbytes

    def load(self, entries: Sequence[SnapshotRow], raw: Vector) -> None:
        """Replace the contents: `raw[i]` is the vector of `entries[i]`."""
        self.rows = Rows(len(entries))
        for entry in entries:
            self.rows.append(entry.id, RowMeta.of(entry))
        self._matrix = normalise(raw)

    def upsert(self, entry_id: int, vector: Vector, meta: RowMeta) -> None:
        row = self.rows.live.get(entry_id)
        if row is None:
            row = self.rows.append(entry_id, meta)
            if row >= len(self._matrix):
                grown = np.zeros((max(16, 2 * len(self._matrix)), self.dimension), np.float32)
                grown[: len(self._matrix)] = self._matrix
                self._matrix = grown
        else:
            self.rows.describe(row, meta)
        self._matrix[row] = normalise(vector)[0]

    def remove(self, entry_id: int) -> None:
        self.rows.kill(entry_id)

    def cosine(self, query: Vector) -> npt.NDArray[np.float32]:
        """The query's cosine similarity to every row (dead ones too), by row."""
        cosines: npt.NDArray[np.float32] = self._matrix[: self.rows.size] @ normalise(query)[0]
        return cosines

    def best(
        self,
        cosines: npt.NDArray[np.float32],
        limit: int,
        filters: MemoryFilter,
        min_similarity: float | None,
    ) -> list[tuple[int, float]]:
        """(id, similarity) of the best `limit` live rows that pass filters and threshold."""
        if limit <= 0 or len(cosines) == 0:
            return []
        allowed = self.rows.mask(filters)
        # Without a threshold, a vector candidate must at least point the same way.
        allowed &= cosines > 0 if min_similarity is None else cosines >= min_similarity
        candidates = np.flatnonzero(allowed)
        if len(candidates) > limit:
            candidates = candidates[np.argpartition(cosines[candidates], -limit)[-limit:]]
        order = candidates[np.argsort(-cosines[candidates], kind="stable")]
        return [(int(self.rows.ids[row]), float(cosines[row])) for row in order]

    def pick(self, cosines: npt.NDArray[np.float32], entry_ids: Sequence[int]) -> dict[int, float]:
        """The similarity of each given entry that has a vector here."""
        live = self.rows.live
        return {i: float(cosines[live[i]]) for i in entry_ids if i in live}


class MemoryIndex:
    """Vectors (of the embedder's model) and full text, at one store generation."""

    def __init__(self, model: str, dimension: int) -> None:
        self.vectors = VectorIndex(model, dimension)
        self.text = LexicalIndex()
        self.generation: str | None = None  # None: never built, or known stale

    def footprint(self) -> dict[str, float]:
        """Sizes for the metrics registry's gauges."""
        return {
            "entries": len(self.text.rows),
            "vectors": len(self.vectors),
            "vector_bytes": self.vectors.nbytes,
            "text_bytes": self.text.nbytes,
        }

    def load(self, snapshot: Sequence[SnapshotRow], generation: str) -> None:
        """Rebuild from `snapshot`, which is the store at generation `generation`."""
        embedded = [row for row in snapshot if row.embedding is not None]
        blob = b"".join(row.embedding for row in embedded if row.embedding is not None)
        raw = np.frombuffer(blob, dtype="<f4").reshape(len(embedded), self.vectors.dimension)
        self.vectors.load(embedded, raw)
        self.text.load((row.id, RowMeta.of(row), searchable_text(row)) for row in snapshot)
        self.generation = generation

    def follow(
        self, entries: Sequence[tuple[MemoryEntry, Vector | None]], removed: Sequence[int]
    ) -> None:
        """Apply entries as now stored (with their vector of this model, if any)."""
        for entry, vector in entries:
            meta = RowMeta.of(entry)
            self.text.upsert(entry.id, searchable_text(entry), meta)
            if vector is None:
                self.vectors.remove(entry.id)
            else:
                self.vectors.upsert(entry.id, vector, meta)
        for entry_id in removed:
            self.text.remove(entry_id)
            self.vectors.remove(entry_id)


def searchable_text(entry: MemoryEntry | SnapshotRow) -> str:
    """What the full-text index holds of an entry: its content and keywords."""
    return f"{entry.content}\n{entry.keywords}"
