"""The memory service: store, retrieve, search and re-embed what the work produces.

Rules it keeps: input is checked before anything is written; the same content in the same
scope is stored once; an entry is stored even when embedding fails (status `pending`,
embedded later by `backfill`); vectors of another model or dimension are never compared;
a search answers for one committed state of the store, which reflects every commit that
finished before it began.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection

from devstream import checks
from devstream.config import Settings
from devstream.db import memory_store, task_store
from devstream.db.memory_store import MemoryFilter, Scope, content_hash
from devstream.db.pool import ConnectionPool
from devstream.db.records import MemoryEntry
from devstream.errors import EmbeddingError, InvalidInput, NotFound
from devstream.memory.embedders import Embedder
from devstream.memory.filters import checked_filter
from devstream.memory.keywords import extract_keywords
from devstream.metrics import MetricsRegistry
from devstream.vocabulary import CONTENT_TYPES

if TYPE_CHECKING:
    import numpy.typing as npt

    from devstream.memory.backfill import Backfiller, EmbedReport, Progress
    from devstream.memory.database_search import DatabaseSearcher
    from devstream.memory.follow import Followed
    from devstream.memory.index import MemoryIndex
    from devstream.memory.search import Searcher, SearchResult, SearchWeights
    from devstream.memory.vectors import Vector

WriteStep = Callable[[AsyncConnection], Awaitable[object]]
Key = tuple[str, Scope]  # what makes two memories the same: content hash and scope


@dataclass(frozen=True)
class NewMemory:
    content: str
    content_type: str
    keywords: Sequence[str] | None = None
    plan_id: int | None = None
    phase_id: int | None = None
    task_id: int | None = None
    embedding: npt.ArrayLike | None = None  # precomputed, in the embedder's model

    @property
    def scope(self) -> Scope:
        return Scope(self.plan_id, self.phase_id, self.task_id)


@dataclass(frozen=True)
class StoreResult:
    entry: MemoryEntry
    created: bool  # False: the same content was already stored in this scope
    embedded: bool  # False: stored as pending, to be embedded by backfill
    warning: str | None = None


def check_new(item: object, max_chars: int) -> NewMemory:
    """The item, its bad input refused with a typed error, all but its vector (which is the
    embedder's to judge): callable before any store is opened."""
    if not isinstance(item, NewMemory):
        raise InvalidInput(f"each item must be a NewMemory, got {checks.shown(item)}")
    _check_content(item.content, max_chars)
    checks.one_of(item.content_type, "content type", CONTENT_TYPES)
    if item.keywords is not None:
        checks.words(item.keywords, "keywords")
    for name in ("plan_id", "phase_id", "task_id"):
        checks.optional_identifier(getattr(item, name), name)
    return item


def _check_content(content: object, max_chars: int) -> None:
    checks.text(content, "memory content", required=True, max_chars=max_chars)


class MemoryService:
    """Storing is here; searching and embedding later are the searcher's and the
    backfiller's, built on first use, so that a process that only stores (a capture hook)
    never loads numpy or the index."""

    def __init__(
        self,
        pool: ConnectionPool,
        metrics: MetricsRegistry,
        embedder: Embedder,
        settings: Settings,
        *,
        index: MemoryIndex | None = None,
    ) -> None:
        if index is not None and (index.vectors.model, index.vectors.dimension) != (
            embedder.model,
            embedder.dimension,
        ):
            raise ValueError("the memory index must be of the embedder's model and dimension")
        self._pool = pool
        self.metrics = metrics
        self.embedder = embedder
        # Look for duplicates before embedding, so that they are not embedded again.
        self._look_first = bool(getattr(embedder, "costly", True))
        self._max_chars = settings.max_memory_chars
        self._given_index = index
        self._database: Path | None = settings.sqlite_path

    @cached_property
    def searcher(self) -> Searcher | DatabaseSearcher:
        """On SQLite the in-process indexes, how they follow the store, and the searches on
        them; on PostgreSQL the searches the database runs."""
        if not self._pool.on_sqlite:
            from devstream.memory.database_search import DatabaseSearcher  # noqa: PLC0415

            return DatabaseSearcher(self._pool, self.metrics, self.embedder)
        return self._in_process

    @cached_property
    def _in_process(self) -> Searcher:
        from devstream.memory.index import MemoryIndex  # noqa: PLC0415
        from devstream.memory.search import Searcher  # noqa: PLC0415

        index = self._given_index
        if index is None:
            index = MemoryIndex(self.embedder.model, self.embedder.dimension)
        return Searcher(self._pool, self.metrics, self.embedder, index, self._database)

    @cached_property
    def _backfiller(self) -> Backfiller:
        from devstream.memory.backfill import Backfiller  # noqa: PLC0415

        return Backfiller(self._pool, self.metrics, self.embedder)

    @property
    def index(self) -> MemoryIndex:
        """The in-process indexes searches rank on (SQLite only)."""
        if not self._pool.on_sqlite:
            raise TypeError("a PostgreSQL store is searched in the database: it has no index")
        return self._in_process.index

    # --- searching and embedding later -----------------------------------------------

    async def search(
        self,
        query: str,
        *,
        limit: int = 10,
        filters: MemoryFilter | None = None,
        min_similarity: float | None = None,
        weights: SearchWeights | None = None,
        exact: bool = False,
    ) -> SearchResult:
        """Hybrid search: full-text and vector rankings fused by weighted RRF (k=60).

        On SQLite the full-text side comes from the in-process index, or with `exact` from
        FTS5 itself (slower on large stores, and the reference the fast path is held to); on
        PostgreSQL the database ranks both sides, `exact` scanning every vector.
        """
        from devstream.memory.search import checked_request  # noqa: PLC0415 (numpy)

        request = checked_request(
            query,
            limit=limit,
            filters=filters,
            min_similarity=min_similarity,
            weights=weights,
            exact=exact,
        )
        return await self.searcher.search(request)

    async def catch_up(self) -> Followed:
        """Make search ready for the store as it stands now: on SQLite the in-process
        indexes catch up; on PostgreSQL the embedder's vector index is made if missing."""
        return await self.searcher.catch_up()

    async def backfill(
        self, batch_size: int = 64, progress: Progress | None = None, *, retry_failed: bool = False
    ) -> EmbedReport:
        """Embed the entries stored as pending (with `retry_failed`, those marked failed too)."""
        return await self._backfiller.backfill(batch_size, progress, retry_failed=retry_failed)

    async def reembed(self, batch_size: int = 64, progress: Progress | None = None) -> EmbedReport:
        """Embed pending entries and those embedded by another model or dimension."""
        return await self._backfiller.reembed(batch_size, progress)

    async def waiting(self, *, other_models: bool = False) -> int:
        """Entries waiting for this model: pending (and, `other_models`, in another model)."""
        return await self._backfiller.waiting(other_models=other_models)

    # --- storing -------------------------------------------------------------------

    async def store(
        self,
        content: str,
        content_type: str,
        *,
        keywords: Sequence[str] | None = None,
        plan_id: int | None = None,
        phase_id: int | None = None,
        task_id: int | None = None,
        embedding: npt.ArrayLike | None = None,
    ) -> StoreResult:
        item = NewMemory(content, content_type, keywords, plan_id, phase_id, task_id, embedding)
        return (await self.store_many([item]))[0]

    async def store_many(
        self, items: Sequence[NewMemory], *, together_with: WriteStep | None = None
    ) -> list[StoreResult]:
        """Store a batch atomically; every item is checked before anything is written.

        `together_with` is another write to commit atomically with the entries: it runs
        first in the same transaction, and if it raises, nothing is stored.
        """
        checks.listed(items, "items", "NewMemory")
        with self.metrics.timed("memory.store"):
            prepared = await self._linked_whole(self._prepare(items))
            unique = _first_of_each(prepared)
            fresh = unique
            if self._look_first and any(p.vector is None for p in fresh):
                hashes = sorted({p.hash for p in unique})
                async with self._pool.read_statement() as conn:
                    stored = _by_key(await memory_store.by_hashes(conn, hashes))
                fresh = [p for p in fresh if p.key not in stored]
            vectors, warning = await self._vectors_for(fresh)
            # Every item goes: one found stored above and deleted since is stored again
            # (with its own vector, or pending).
            rows = [p.row(vectors.get(p.key, p.vector), self.embedder) for p in unique]
            # Alone, each statement may commit by itself: the links are read, and a link
            # deleted before the insert makes the database refuse it.
            writing = (
                self._pool.write_statements()
                if together_with is None
                else self._pool.write_transaction()
            )
            async with writing as conn:
                if together_with is not None:
                    await together_with(conn)
                await _check_links(conn, [p.item.scope for p in prepared])
                existing, created = await memory_store.store_new(conn, rows)
        self.metrics.increment("memory.stored", len(created))
        before, now = _by_key(existing), _by_key(created)
        return [self._result(p, before, now, warning) for p in prepared]

    def _prepare(self, items: Sequence[NewMemory]) -> list[_Prepared]:
        """Check every item, then derive what is stored: keywords (unless given, extracted
        in one batch), the content hash, the vector as float32."""
        vectors = [self._check(item) for item in items]
        extracted = iter(extract_keywords([i.content for i in items if i.keywords is None]))
        prepared = []
        for item, vector in zip(items, vectors, strict=True):
            keywords = list(item.keywords) if item.keywords is not None else next(extracted)
            digest = content_hash(item.content)
            prepared.append(
                _Prepared(item, digest, " ".join(keywords), vector, (digest, item.scope))
            )
        return prepared

    async def _linked_whole(self, prepared: list[_Prepared]) -> list[_Prepared]:
        """Items linked to a task or a phase alone, linked to the phase and plan that hold
        it too: a search of the plan finds them, and one content linked either way is one
        memory. (A task stays in its phase, a phase in its plan: read before the write.)"""
        partial = [p.item.scope for p in prepared if _partial(p.item.scope)]
        if not partial:
            return prepared
        async with self._pool.read_statement() as conn:
            found = await _checked_places(conn, partial)
        return [
            p.linked(_whole(p.item.scope, found)) if _partial(p.item.scope) else p for p in prepared
        ]

    def _check(self, item: object) -> Vector | None:
        """Refuse bad input with a typed error; the item's vector, if it came with one."""
        new = check_new(item, self._max_chars)
        return None if new.embedding is None else self._check_vector(new.embedding)

    def _check_vector(self, values: npt.ArrayLike) -> Vector:
        # Only a caller giving vectors needs numpy.
        from devstream.memory.vectors import as_float32, fault  # noqa: PLC0415

        try:
            vector = as_float32(values).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInput(f"embedding must be a list of numbers: {exc}") from exc
        if vector.shape != (self.embedder.dimension,):
            raise InvalidInput(
                f"embedding has {vector.size} values; {self.embedder.model} uses "
                f"{self.embedder.dimension}"
            )
        if problem := fault(vector):
            raise InvalidInput(f"embedding has {problem}")
        return vector

    async def _vectors_for(
        self, fresh: Sequence[_Prepared]
    ) -> tuple[dict[Key, Vector], str | None]:
        vectors = {p.key: p.vector for p in fresh if p.vector is not None}
        missing = [p for p in fresh if p.vector is None]
        if not missing:
            return vectors, None
        try:
            with self.metrics.timed("memory.embed"):
                embedded = await self.embedder.embed([p.item.content for p in missing])
        except EmbeddingError as exc:
            self.metrics.increment("memory.embed_failures")
            return vectors, f"stored as pending, not embedded: {exc}"
        vectors.update({p.key: vector for p, vector in zip(missing, embedded, strict=True)})
        return vectors, None

    def _result(
        self,
        prepared: _Prepared,
        existing: dict[Key, MemoryEntry],
        created: dict[Key, MemoryEntry],
        warning: str | None,
    ) -> StoreResult:
        if prepared.key in existing:
            entry = existing[prepared.key]
            return StoreResult(entry, created=False, embedded=entry.embedding_status == "embedded")
        entry = created[prepared.key]
        embedded = entry.embedding_status == "embedded"
        if not embedded and warning is None:  # it was not sent to the embedder at all
            warning = "stored as pending: found stored before embedding, then deleted before it"
        return StoreResult(
            entry, created=True, embedded=embedded, warning=None if embedded else warning
        )

    # --- reading and changing ------------------------------------------------------

    async def get(self, entry_id: int) -> MemoryEntry:
        """The entry, counting the retrieval."""
        checks.identifier(entry_id, "entry_id")
        async with self._pool.write_transaction() as conn:
            await self.count_retrievals_in(conn, [entry_id])
            entry = await memory_store.get(conn, entry_id)
            if entry is None:  # raised inside: the refusal rolls back
                raise NotFound("memory", entry_id)
        return entry

    async def entries(
        self, filters: MemoryFilter | None = None, *, limit: int | None = 100, offset: int = 0
    ) -> list[MemoryEntry]:
        filters = checked_filter(filters)
        checks.limit(limit)
        checks.whole(offset, "offset", 0)
        async with self._pool.read_transaction() as conn:
            return await memory_store.list_entries(
                conn, filters or MemoryFilter(), limit=limit, offset=offset
            )

    async def update(
        self,
        entry_id: int,
        *,
        content: str | None = None,
        content_type: str | None = None,
        keywords: Sequence[str] | None = None,
    ) -> MemoryEntry:
        """Change an entry; new content gets new keywords (unless given) and a new vector."""
        checks.identifier(entry_id, "entry_id")
        if content is not None:
            _check_content(content, self._max_chars)
        if content_type is not None:
            checks.one_of(content_type, "content type", CONTENT_TYPES)
        if keywords is not None:
            checks.words(keywords, "keywords")
        before = await self._read(entry_id)
        new_content = content is not None and content != before.content
        if keywords is None and not new_content:
            keywords = before.keywords.split()
        changed = NewMemory(
            content if content is not None else before.content,
            content_type or before.content_type,
            keywords,
            before.plan_id,
            before.phase_id,
            before.task_id,
        )
        prepared = self._prepare([changed])[0]
        values: dict[str, object] = {
            "content_type": prepared.item.content_type,
            "keywords": prepared.keywords,
        }
        vector = None
        if new_content:
            vectors, _ = await self._vectors_for([prepared])
            vector = vectors.get(prepared.key)
            values.update(prepared.row(vector, self.embedder))
        async with self._pool.write_transaction() as conn:
            entry = await memory_store.update_entry(conn, entry_id, values)
            if entry is None:
                raise NotFound("memory", entry_id)
        return entry

    async def delete(self, entry_id: int) -> None:
        checks.identifier(entry_id, "entry_id")
        async with self._pool.write_transaction() as conn:
            if not await memory_store.delete_entry(conn, entry_id):
                raise NotFound("memory", entry_id)

    async def _read(self, entry_id: int) -> MemoryEntry:
        async with self._pool.read_transaction() as conn:
            entry = await memory_store.get(conn, entry_id)
        if entry is None:
            raise NotFound("memory", entry_id)
        return entry

    async def count_retrievals(self, entry_ids: Sequence[int]) -> None:
        """Count a retrieval of each entry (a `get`, or being injected into a context)."""
        entry_ids = checks.identifiers(entry_ids, "entry_ids")
        async with self._pool.write_transaction() as conn:
            await self.count_retrievals_in(conn, entry_ids)

    async def count_retrievals_in(self, conn: AsyncConnection, entry_ids: Sequence[int]) -> None:
        """Inside the caller's write transaction: count a retrieval of each entry."""
        await memory_store.touch(conn, entry_ids)


@dataclass(frozen=True)
class _Prepared:
    item: NewMemory
    hash: str
    keywords: str
    vector: Vector | None
    key: Key  # what deduplication compares: content hash and scope

    def linked(self, scope: Scope) -> _Prepared:
        """The same item in this scope."""
        item = replace(
            self.item, plan_id=scope.plan_id, phase_id=scope.phase_id, task_id=scope.task_id
        )
        return replace(self, item=item, key=(self.hash, scope))

    def row(self, vector: Vector | None, embedder: Embedder) -> dict[str, object]:
        embedded = vector is not None
        embedding = None
        if vector is not None:
            from devstream.memory.vectors import encode  # noqa: PLC0415  (numpy)

            embedding = encode(vector)
        return {
            "content": self.item.content,
            "content_type": self.item.content_type,
            "keywords": self.keywords,
            "content_hash": self.hash,
            "plan_id": self.item.plan_id,
            "phase_id": self.item.phase_id,
            "task_id": self.item.task_id,
            "embedding": embedding,
            "embedding_model": embedder.model if embedded else None,
            "embedding_dim": embedder.dimension if embedded else None,
            "embedding_status": "embedded" if embedded else "pending",
            "embedding_attempts": 0,  # new content is a new input to embed
            "embedding_error": None,
        }


async def _check_links(conn: AsyncConnection, given: Iterable[Scope]) -> None:
    """Refuse a link to a plan, phase or task that does not exist, naming it (rather than
    the foreign key's anonymous refusal), and links that disagree: a memory of a task in
    another plan than the one it names would be missed by a search of either."""
    scopes = [scope for scope in dict.fromkeys(given) if scope != Scope()]  # in item order
    if scopes:
        await _checked_places(conn, scopes)


async def _checked_places(conn: AsyncConnection, scopes: Sequence[Scope]) -> task_store.Places:
    """Where the scopes' plans, phases and tasks are, each scope checked (see `_check_links`)."""
    found = await task_store.places(
        conn,
        {s.plan_id for s in scopes if s.plan_id is not None},
        {s.phase_id for s in scopes if s.phase_id is not None},
        {s.task_id for s in scopes if s.task_id is not None},
    )
    for scope in scopes:
        found.check(scope.plan_id, scope.phase_id, scope.task_id)
    return found


def _partial(scope: Scope) -> bool:
    """Linked to a task without its phase or plan, or to a phase without its plan."""
    if scope.task_id is not None:
        return scope.phase_id is None or scope.plan_id is None
    return scope.phase_id is not None and scope.plan_id is None


def _whole(scope: Scope, found: task_store.Places) -> Scope:
    """The scope with the phase and plan of its task, or the plan of its phase."""
    if scope.task_id is not None:
        phase_id, plan_id = found.tasks[scope.task_id]
        return Scope(plan_id, phase_id, scope.task_id)
    if scope.phase_id is not None:
        return Scope(found.phases[scope.phase_id], scope.phase_id)
    return scope


def _first_of_each(prepared: Iterable[_Prepared]) -> list[_Prepared]:
    """One item per content and scope: repeats within a batch are stored once."""
    unique: dict[Key, _Prepared] = {}
    for item in prepared:
        unique.setdefault(item.key, item)
    return list(unique.values())


def _by_key(entries: Iterable[MemoryEntry]) -> dict[Key, MemoryEntry]:
    return {
        (entry.content_hash, Scope(entry.plan_id, entry.phase_id, entry.task_id)): entry
        for entry in entries
    }
