"""Row bookkeeping shared by the in-process indexes: entry ids, filter metadata, liveness.

Rows are appended in batches to arrays with spare capacity (amortised constant time) and
never move; a removed or changed entry leaves a dead row behind (a changed one gets a new
row) until the index is next rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from devstream.db.index_source import IndexRows
from devstream.db.memory_store import MemoryFilter
from devstream.vocabulary import CONTENT_TYPES, EMBEDDING_STATUSES

Mask = npt.NDArray[np.bool_]
RowIds = npt.NDArray[np.int64]

_NO_LINK = -1
_TYPE_CODES = {name: code for code, name in enumerate(CONTENT_TYPES)}
_STATUS_CODES = {name: code for code, name in enumerate(EMBEDDING_STATUSES)}
# The per-row arrays, grown together, with their types and shapes past the first axis.
COLUMNS: dict[str, tuple[type[np.generic], tuple[int, ...]]] = {
    "ids": (np.int64, ()),
    "alive": (np.bool_, ()),
    "has_vector": (np.bool_, ()),
    "types": (np.int8, ()),
    "links": (np.int64, (3,)),
    "created": (np.float64, ()),
    "statuses": (np.int8, ()),
    "lengths": (np.float64, ()),  # tokens FTS5 counts for the entry (content and keywords)
}


class Rows:
    def __init__(self) -> None:
        self.size = 0  # rows used, dead ones included
        self.live: dict[int, int] = {}  # entry id -> its row
        self.total_length = 0.0  # tokens over live rows
        self.arrays: dict[str, npt.NDArray[np.generic]] = {}
        self._allocate(0)

    @classmethod
    def loaded(cls, arrays: dict[str, npt.NDArray[np.generic]]) -> Rows:
        """Rows from saved columns (every column as `COLUMNS` describes it)."""
        rows = cls()
        rows.arrays, rows.size = arrays, len(arrays["ids"])
        live = np.flatnonzero(rows.alive)
        rows.live = dict(zip(rows.ids[live].tolist(), live.tolist(), strict=True))
        rows.total_length = float(rows.lengths[live].sum())
        return rows

    def __len__(self) -> int:
        return len(self.live)

    @property
    def ids(self) -> RowIds:
        return self.arrays["ids"]  # type: ignore[return-value]

    @property
    def alive(self) -> Mask:
        return self.arrays["alive"]  # type: ignore[return-value]

    @property
    def has_vector(self) -> Mask:
        return self.arrays["has_vector"]  # type: ignore[return-value]

    @property
    def lengths(self) -> npt.NDArray[np.float64]:
        return self.arrays["lengths"]  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays.values())

    def append(self, batch: IndexRows, lengths: Sequence[float] | npt.NDArray[np.float64]) -> range:
        """New live rows for the batch's entries (earlier rows of theirs die); their rows."""
        count = len(batch.ids)
        if count == 0:
            return range(self.size, self.size)
        for entry_id in self.live.keys() & batch.ids:  # a rebuild's rows are all new
            self.kill(entry_id)
        while self.size + count > len(self.ids):
            self._grow(self.size + count)
        rows = range(self.size, self.size + count)
        part = slice(self.size, self.size + count)
        self.size += count
        arrays = self.arrays
        arrays["ids"][part] = batch.ids
        arrays["alive"][part] = True
        arrays["has_vector"][part] = [blob is not None for blob in batch.embeddings]
        arrays["types"][part] = [_TYPE_CODES[name] for name in batch.content_types]
        links = zip(batch.plan_ids, batch.phase_ids, batch.task_ids, strict=True)
        arrays["links"][part] = [
            [_NO_LINK if link is None else link for link in row] for row in links
        ]
        arrays["created"][part] = _seconds(batch.created)
        arrays["statuses"][part] = [_STATUS_CODES[name] for name in batch.statuses]
        arrays["lengths"][part] = lengths
        self.live.update(zip(batch.ids, rows, strict=True))
        self.total_length += float(np.sum(lengths))
        return rows

    def kill(self, entry_id: int) -> None:
        row = self.live.pop(entry_id, None)
        if row is not None:
            self.alive[row] = False
            self.total_length -= float(self.lengths[row])

    def rows_of(self, entry_ids: npt.NDArray[np.int64]) -> RowIds:
        """The live row of each entry id (every one must be live)."""
        live = self.live
        return np.fromiter((live[int(i)] for i in entry_ids), dtype=np.int64, count=len(entry_ids))

    def mask(self, filters: MemoryFilter) -> Mask:
        """Live rows that pass the filters."""
        n, arrays = self.size, self.arrays
        mask: Mask = self.alive[:n].copy()
        if filters.content_types:
            codes = [_TYPE_CODES[name] for name in filters.content_types]
            mask &= np.isin(arrays["types"][:n], codes)
        for column, value in enumerate((filters.plan_id, filters.phase_id, filters.task_id)):
            if value is not None:
                mask &= arrays["links"][:n, column] == value
        created: npt.NDArray[np.float64] = arrays["created"][:n]  # type: ignore[assignment]
        if filters.created_after is not None:
            mask &= created >= filters.created_after.timestamp()
        if filters.created_before is not None:
            mask &= created < filters.created_before.timestamp()
        if filters.embedding_status is not None:
            mask &= arrays["statuses"][:n] == _STATUS_CODES[filters.embedding_status]
        return mask

    def _allocate(self, capacity: int) -> None:
        self.arrays = {
            name: np.zeros((capacity, *shape), dtype=dtype)
            for name, (dtype, shape) in COLUMNS.items()
        }

    def _grow(self, needed: int) -> None:
        old, used = self.arrays, self.size
        self._allocate(max(16, 2 * len(self.ids), needed))
        for name, array in old.items():
            self.arrays[name][:used] = array[:used]


def _seconds(created: Sequence[str]) -> npt.NDArray[np.float64]:
    """SQLite's UTC timestamps as POSIX seconds, as `datetime.timestamp()` gives them."""
    micros = np.array(created, dtype="datetime64[us]").astype(np.int64)
    seconds: npt.NDArray[np.float64] = micros / 1e6
    return seconds
