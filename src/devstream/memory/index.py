"""The in-process vector index: L2-normalised float32 rows, searched by one matrix product.

Rows are kept in arrays with spare capacity, so this process's own writes update the index
in place in amortised constant time. The index remembers the store-generation token it
matches; any other token means the store changed behind its back (another process, or a
rolled-back transaction) and it must be rebuilt before it answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from devstream.db.memory_store import MemoryFilter, StoredVectors
from devstream.db.schema import CONTENT_TYPES

Vector = npt.NDArray[np.float32]

_NO_LINK = -1
_TYPE_CODES = {name: code for code, name in enumerate(CONTENT_TYPES)}


@dataclass(frozen=True)
class RowMeta:
    """What filters look at, per row."""

    content_type: str
    plan_id: int | None
    phase_id: int | None
    task_id: int | None
    created_at: datetime


def normalise(vectors: npt.ArrayLike) -> Vector:
    """Rows scaled to unit length (zero rows stay zero)."""
    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: Vector = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return unit


class VectorIndex:
    def __init__(self, model: str, dimension: int) -> None:
        self.model = model
        self.dimension = dimension
        self.generation: str | None = None  # None: never loaded, or known stale
        self._size = 0
        self._rows: dict[int, int] = {}
        self._allocate(0)

    def __len__(self) -> int:
        return self._size

    @property
    def vectors(self) -> Vector:
        """The unit vectors in use, one row per entry (a view, not a copy)."""
        return self._matrix[: self._size]

    @property
    def nbytes(self) -> int:
        """Memory held by the index's arrays, spare capacity included."""
        arrays = (self._matrix, self._ids, self._types, self._links, self._created)
        return sum(array.nbytes for array in arrays)

    def load(self, stored: StoredVectors, generation: str) -> None:
        """Replace the contents with `stored`, which matches store generation `generation`."""
        count = len(stored.ids)
        self._allocate(count)
        if count:
            raw = np.frombuffer(b"".join(stored.blobs), dtype="<f4").reshape(count, -1)
            self._matrix[:count] = normalise(raw)
        self._ids[:count] = stored.ids
        self._types[:count] = [_TYPE_CODES[name] for name in stored.content_types]
        for column, values in enumerate((stored.plan_ids, stored.phase_ids, stored.task_ids)):
            self._links[:count, column] = [_NO_LINK if v is None else v for v in values]
        self._created[:count] = [moment.timestamp() for moment in stored.created_at]
        self._size = count
        self._rows = {entry_id: row for row, entry_id in enumerate(stored.ids)}
        self.generation = generation

    def upsert(self, entry_id: int, vector: Vector, meta: RowMeta) -> None:
        row = self._rows.get(entry_id)
        if row is None:
            if self._size == len(self._ids):
                self._grow()
            row = self._size
            self._size += 1
            self._rows[entry_id] = row
        self._matrix[row] = normalise(vector)[0]
        self._ids[row] = entry_id
        self._types[row] = _TYPE_CODES[meta.content_type]
        self._links[row] = [
            _NO_LINK if v is None else v for v in (meta.plan_id, meta.phase_id, meta.task_id)
        ]
        self._created[row] = meta.created_at.timestamp()

    def remove(self, entry_id: int) -> None:
        row = self._rows.pop(entry_id, None)
        if row is None:
            return
        last = self._size - 1
        if row != last:  # move the last row into the hole
            for array in (self._matrix, self._ids, self._types, self._links, self._created):
                array[row] = array[last]
            self._rows[int(self._ids[row])] = row
        self._size = last

    def search(
        self, query: Vector, limit: int, filters: MemoryFilter, min_similarity: float | None
    ) -> list[tuple[int, float]]:
        """(id, cosine similarity) of the best `limit` rows that pass filters and threshold."""
        if self._size == 0 or limit <= 0:
            return []
        sims = self._matrix[: self._size] @ normalise(query)[0]
        allowed = self._mask(filters)
        # Without a threshold, a vector candidate must at least point the same way.
        allowed &= sims > 0 if min_similarity is None else sims >= min_similarity
        candidates = np.flatnonzero(allowed)
        if len(candidates) > limit:
            top = np.argpartition(sims[candidates], -limit)[-limit:]
            candidates = candidates[top]
        order = candidates[np.argsort(-sims[candidates], kind="stable")]
        return [(int(self._ids[row]), float(sims[row])) for row in order]

    def similarity(self, query: Vector, entry_ids: list[int]) -> dict[int, float]:
        """Cosine similarity of the query to each given entry that has a vector here."""
        rows = {entry_id: self._rows[entry_id] for entry_id in entry_ids if entry_id in self._rows}
        if not rows:
            return {}
        sims = self._matrix[list(rows.values())] @ normalise(query)[0]
        return {entry_id: float(sim) for entry_id, sim in zip(rows, sims, strict=True)}

    def _mask(self, filters: MemoryFilter) -> npt.NDArray[np.bool_]:
        n = self._size
        mask = np.ones(n, dtype=bool)
        if filters.embedding_status not in (None, "embedded"):
            return np.zeros(n, dtype=bool)  # every row here is embedded
        if filters.content_types:
            codes = [_TYPE_CODES[name] for name in filters.content_types]
            mask &= np.isin(self._types[:n], codes)
        for column, value in enumerate((filters.plan_id, filters.phase_id, filters.task_id)):
            if value is not None:
                mask &= self._links[:n, column] == value
        if filters.created_after is not None:
            mask &= self._created[:n] >= filters.created_after.timestamp()
        if filters.created_before is not None:
            mask &= self._created[:n] < filters.created_before.timestamp()
        return mask

    def _allocate(self, capacity: int) -> None:
        self._matrix: Vector = np.zeros((capacity, self.dimension), dtype=np.float32)
        self._ids = np.zeros(capacity, dtype=np.int64)
        self._types = np.zeros(capacity, dtype=np.int8)
        self._links = np.full((capacity, 3), _NO_LINK, dtype=np.int64)
        self._created = np.zeros(capacity, dtype=np.float64)

    def _grow(self) -> None:
        matrix, ids, types, links, created = (
            self._matrix,
            self._ids,
            self._types,
            self._links,
            self._created,
        )
        size = len(ids)
        self._allocate(max(16, 2 * size))
        self._matrix[:size] = matrix
        self._ids[:size] = ids
        self._types[:size] = types
        self._links[:size] = links
        self._created[:size] = created
