"""Row bookkeeping shared by the in-process indexes: entry ids, filter metadata, liveness.

Rows are appended to arrays with spare capacity (amortised constant time) and never move;
a removed or replaced entry leaves a dead row behind until the index is next rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from devstream.db.memory_store import MemoryFilter, SnapshotRow
from devstream.db.records import MemoryEntry
from devstream.db.schema import CONTENT_TYPES, EMBEDDING_STATUSES

Mask = npt.NDArray[np.bool_]

_NO_LINK = -1
_TYPE_CODES = {name: code for code, name in enumerate(CONTENT_TYPES)}
_STATUS_CODES = {name: code for code, name in enumerate(EMBEDDING_STATUSES)}
# The per-row arrays, grown together.
_ARRAYS = ("ids", "alive", "_types", "_links", "_created", "_statuses")


@dataclass(frozen=True)
class RowMeta:
    """What filters look at, per row."""

    content_type: str
    plan_id: int | None
    phase_id: int | None
    task_id: int | None
    created_at: datetime
    embedding_status: str

    @classmethod
    def of(cls, entry: MemoryEntry | SnapshotRow) -> RowMeta:
        return cls(
            entry.content_type,
            entry.plan_id,
            entry.phase_id,
            entry.task_id,
            entry.created_at,
            entry.embedding_status,
        )


class Rows:
    def __init__(self, capacity: int = 0) -> None:
        self.size = 0  # rows used, dead ones included
        self.live: dict[int, int] = {}  # entry id -> its row
        self._allocate(capacity)

    def __len__(self) -> int:
        return len(self.live)

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes for a in (self.ids, self._types, self._links, self._created, self.alive)
        )

    def append(self, entry_id: int, meta: RowMeta) -> int:
        """A new live row for the entry; an earlier row of the same entry dies."""
        self.kill(entry_id)
        if self.size == len(self.ids):
            self._grow()
        row = self.size
        self.size += 1
        self.ids[row] = entry_id
        self.alive[row] = True
        self.live[entry_id] = row
        self.describe(row, meta)
        return row

    def describe(self, row: int, meta: RowMeta) -> None:
        self._types[row] = _TYPE_CODES[meta.content_type]
        links = (meta.plan_id, meta.phase_id, meta.task_id)
        self._links[row] = [_NO_LINK if link is None else link for link in links]
        self._created[row] = meta.created_at.timestamp()
        self._statuses[row] = _STATUS_CODES[meta.embedding_status]

    def kill(self, entry_id: int) -> None:
        row = self.live.pop(entry_id, None)
        if row is not None:
            self.alive[row] = False

    def mask(self, filters: MemoryFilter) -> Mask:
        """Live rows that pass the filters."""
        n = self.size
        mask: Mask = self.alive[:n].copy()
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
        if filters.embedding_status is not None:
            mask &= self._statuses[:n] == _STATUS_CODES[filters.embedding_status]
        return mask

    def _allocate(self, capacity: int) -> None:
        self.ids = np.zeros(capacity, dtype=np.int64)
        self.alive = np.zeros(capacity, dtype=bool)
        self._types = np.zeros(capacity, dtype=np.int8)
        self._links = np.full((capacity, 3), _NO_LINK, dtype=np.int64)
        self._created = np.zeros(capacity, dtype=np.float64)
        self._statuses = np.zeros(capacity, dtype=np.int8)

    def _grow(self) -> None:
        old = {name: getattr(self, name) for name in _ARRAYS}
        used = len(self.ids)
        self._allocate(max(16, 2 * used))
        for name, array in old.items():
            getattr(self, name)[:used] = array
