"""The store as the in-process memory indexes read it.

Where the store stands (its generation token and the newest change), the entries changed
since a sequence number, the rows the indexes hold, and FTS5's own postings and positions
(through the `memory_fts_instance` fts5vocab table), so that the indexes never tokenize
the store's text themselves. Every function reads on the caller's connection: a catch-up
or a rebuild reads one snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class StoreState:
    """Where the store stands, and what it says of the change an index applied last."""

    token: str  # the store-generation token
    seq: int  # the newest change (0: none logged)
    seq_token: str | None  # the token of that change
    known_token: str | None  # the token of the change asked about, if it still exists
    oldest: int | None  # the oldest change still logged

    def continues(self, seq: int, seq_token: str | None) -> bool:
        """Whether an index that applied every change up to `seq` (made under `seq_token`)
        can catch up by applying the changes after it: that change still exists as it was
        (a rolled-back one is gone or reused under another token) and none since is pruned."""
        if seq == 0:
            return self.oldest in (None, 1)
        return self.known_token is not None and self.known_token == seq_token


@dataclass(frozen=True)
class IndexRows:
    """Entries as the indexes hold them, column by column, in id order."""

    ids: list[int]
    content_types: list[str]
    plan_ids: list[int | None]
    phase_ids: list[int | None]
    task_ids: list[int | None]
    created: list[str]  # as SQLite stores it: "YYYY-MM-DD HH:MM:SS[.ffffff]", UTC
    statuses: list[str]
    embeddings: list[bytes | None]  # only vectors of the model asked for
    texts: list[tuple[str, str]] | None  # (content, keywords), when asked for


@dataclass(frozen=True)
class Postings:
    """FTS5's postings: for term i, `docs[offsets[i]:offsets[i + 1]]` holds the entry id of
    each of its instances (so an id repeats once per occurrence), ascending."""

    terms: list[str]
    offsets: list[int]
    docs: str  # every term's entry ids, comma-separated, in term order


_STATE = text(
    """SELECT s.generation,
       coalesce(newest.seq, 0),
       newest.generation,
       (SELECT generation FROM memory_changes WHERE seq = :seq),
       (SELECT min(seq) FROM memory_changes)
    FROM store_state AS s
    LEFT JOIN (SELECT seq, generation FROM memory_changes ORDER BY seq DESC LIMIT 1) AS newest
    WHERE s.id = 1"""
)
# A vector is read only if it holds the dimension's float32 values: one written otherwise
# (by hand, or imported by an older DevStream) counts as none rather than breaking the index.
_ROW_COLUMNS = """id, content_type, plan_id, phase_id, task_id, created_at, embedding_status,
    CASE WHEN embedding_status = 'embedded' AND embedding_model = :model
         AND embedding_dim = :dimension AND typeof(embedding) = 'blob'
         AND length(embedding) = 4 * :dimension THEN embedding END"""
# The entries changed since a change, each with its row as it is now (NULLs: deleted).
_CHANGED_ROWS = text(
    f"""SELECT changed.entry_id, {_ROW_COLUMNS}, content, keywords
    FROM (SELECT DISTINCT entry_id FROM memory_changes WHERE seq > :seq LIMIT :limit) AS changed
    LEFT JOIN memory_entries ON memory_entries.id = changed.entry_id
    ORDER BY changed.entry_id"""
)
_COUNT = text("SELECT count(*) FROM memory_entries")
_ROWS_AFTER = text(
    f"SELECT {_ROW_COLUMNS} FROM memory_entries WHERE id > :after ORDER BY id LIMIT :limit"
)
# fts5vocab delivers terms in order, so the grouping needs no sort; within a term,
# instances come in document order.
_POSTINGS = text("SELECT term, group_concat(doc) FROM memory_fts_instance GROUP BY term")
_POSITIONS = text(
    """SELECT group_concat(doc || ',' || (col = 'keywords') || ',' || "offset")
    FROM memory_fts_instance WHERE term = :term"""
)


async def state(conn: AsyncConnection, seq: int) -> StoreState:
    """Where the store stands, and the token of change `seq` if it is still logged."""
    row = (await conn.execute(_STATE, {"seq": seq})).one()
    return StoreState(str(row[0]), int(row[1]), row[2], row[3], row[4])


async def changed_since(
    conn: AsyncConnection, seq: int, model: str, dimension: int, limit: int
) -> tuple[list[int], IndexRows]:
    """Up to `limit` ids of entries inserted, changed or deleted after change `seq`, and the
    rows of those that still exist, with their content and keywords, in one statement."""
    parameters = {"seq": seq, "model": model, "dimension": dimension, "limit": limit}
    found = (await conn.execute(_CHANGED_ROWS, parameters)).all()
    existing = [row[1:] for row in found if row[1] is not None]
    return [int(row[0]) for row in found], _columns(existing, with_text=True)


async def count(conn: AsyncConnection) -> int:
    return int((await conn.execute(_COUNT)).scalar_one())


async def rows_after(
    conn: AsyncConnection, model: str, dimension: int, after: int, limit: int
) -> IndexRows:
    """Up to `limit` entries with ids above `after`, in id order, each with its vector when
    it has one of this model and dimension."""
    parameters = {"model": model, "dimension": dimension, "after": after, "limit": limit}
    return _columns((await conn.execute(_ROWS_AFTER, parameters)).all(), with_text=False)


async def postings(conn: AsyncConnection) -> Postings:
    """Every term FTS5 holds, with the entries of each of its instances."""
    terms: list[str] = []
    offsets = [0]
    lists: list[str] = []
    for term, docs in await conn.execute(_POSTINGS):
        terms.append(term)
        lists.append(docs)
        offsets.append(offsets[-1] + docs.count(",") + 1)
    return Postings(terms, offsets, ",".join(lists))


async def positions(conn: AsyncConnection, term: str) -> str:
    """Every instance of `term` as "entry,column,offset" triples, comma-separated
    (column 0 is the content, 1 the keywords); empty when FTS5 has no such term."""
    return str((await conn.execute(_POSITIONS, {"term": term})).scalar() or "")


def _columns(rows: Sequence[Any], *, with_text: bool) -> IndexRows:
    if not rows:
        return IndexRows([], [], [], [], [], [], [], [], [] if with_text else None)
    columns = list(zip(*rows, strict=True))
    return IndexRows(
        ids=list(columns[0]),
        content_types=list(columns[1]),
        plan_ids=list(columns[2]),
        phase_ids=list(columns[3]),
        task_ids=list(columns[4]),
        created=list(columns[5]),
        statuses=list(columns[6]),
        embeddings=list(columns[7]),
        texts=list(zip(columns[8], columns[9], strict=True)) if with_text else None,
    )
