"""Embedding later: the memories stored while no vector could be made, embedded in batches.

A batch the server refuses is split until the inputs it refuses on their own are found;
those are set aside with their reason (failed after EMBED_ATTEMPTS backfills), so one input
a model cannot take never blocks the others. A server that does not work at all stops the
backfill and blames no memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from devstream import checks
from devstream.db import memory_store
from devstream.db.pool import ConnectionPool
from devstream.errors import EmbeddingError, EmbeddingRefused
from devstream.memory.embedders import Embedder
from devstream.memory.vectors import Vector, Vectors, encode
from devstream.metrics import MetricsRegistry

# Failed attempts at embedding one memory on its own, over backfills, before it is failed.
EMBED_ATTEMPTS = 3
# What a backfill embeds to tell a server that refuses some inputs from one that fails.
SERVER_PROBE = "a short text any embedding model takes"

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class EmbedReport:
    embedded: int
    remaining: int
    error: str | None = None  # why it stopped early, if it did
    set_aside: dict[int, str] = field(default_factory=dict)  # refused on their own: why
    requests: int = 0  # embedding requests made, the splits of refused batches included


@dataclass
class _Run:
    """A backfill's running totals."""

    embedded: int = 0
    requests: int = 0
    set_aside: dict[int, str] = field(default_factory=dict)
    error: str | None = None


class Backfiller:
    def __init__(self, pool: ConnectionPool, metrics: MetricsRegistry, embedder: Embedder) -> None:
        self._pool = pool
        self.metrics = metrics
        self.embedder = embedder

    async def backfill(
        self, batch_size: int, progress: Progress | None, *, retry_failed: bool
    ) -> EmbedReport:
        """Embed the entries stored as pending (with `retry_failed`, those marked failed too)."""
        checks.flag(retry_failed, "retry_failed")
        if retry_failed:
            async with self._pool.write_transaction() as conn:
                await memory_store.retry_failed(conn)
        return await self._embed_waiting(
            other_models=False, batch_size=batch_size, progress=progress
        )

    async def reembed(self, batch_size: int, progress: Progress | None) -> EmbedReport:
        """Embed pending entries and those embedded by another model or dimension."""
        return await self._embed_waiting(
            other_models=True, batch_size=batch_size, progress=progress
        )

    async def waiting(self, *, other_models: bool) -> int:
        checks.flag(other_models, "other_models")
        async with self._pool.read_transaction() as conn:
            return await memory_store.count_awaiting(
                conn, self.embedder.model, self.embedder.dimension, other_models=other_models
            )

    async def _embed_waiting(
        self, *, other_models: bool, batch_size: int, progress: Progress | None
    ) -> EmbedReport:
        """Embed what waits, batch by batch in id order. A batch the server refuses is split
        until the inputs it refuses on their own are found: those are set aside (an attempt
        counted, the reason kept) and the rest embedded. Whether the server itself works is
        asked with a probe text any model embeds, first and after each refusal (its success
        also closes a circuit breaker that an earlier outage left half-open); when it does
        not, the backfill stops."""
        checks.whole(batch_size, "batch size", 1)
        total = await self.waiting(other_models=other_models)
        run = _Run()
        try:
            if total:
                await self._embed_counted([SERVER_PROBE], run)  # does the server work at all?
            async for batch in self._waiting_batches(other_models, batch_size):
                refused: dict[int, str] = {}
                try:
                    await self._embed_isolating(batch, run, refused)
                finally:
                    await self._record_failures(refused)
                    run.set_aside.update(refused)
                if progress is not None:
                    progress(run.embedded + len(run.set_aside), total)
        except EmbeddingError as exc:
            self.metrics.increment("memory.embed_failures")
            run.error = str(exc)
        remaining = await self.waiting(other_models=other_models)
        return EmbedReport(run.embedded, remaining, run.error, run.set_aside, run.requests)

    async def _waiting_batches(
        self, other_models: bool, batch_size: int
    ) -> AsyncIterator[list[tuple[int, str]]]:
        """(id, content) of what waits, in id order, a batch at a time."""
        model, dimension = self.embedder.model, self.embedder.dimension
        after_id = 0
        while True:
            async with self._pool.read_transaction() as conn:
                batch = await memory_store.awaiting_embedding(
                    conn,
                    model,
                    dimension,
                    other_models=other_models,
                    after_id=after_id,
                    limit=batch_size,
                )
            if not batch:
                return
            yield batch
            after_id = batch[-1][0]

    async def _embed_isolating(
        self, batch: list[tuple[int, str]], run: _Run, refused: dict[int, str]
    ) -> None:
        """Embed the batch, halving what the server refuses until `refused` holds the inputs
        it refuses on their own, with why."""
        parts = deque([batch])
        while parts:
            part = parts.popleft()
            try:
                vectors = await self._embed_counted([content for _, content in part], run)
            except EmbeddingRefused as exc:
                # Raises unless the server still works: then the refusal is about this input.
                await self._embed_counted([SERVER_PROBE], run)
                if len(part) == 1:
                    refused[part[0][0]] = str(exc)
                else:
                    half = (len(part) + 1) // 2
                    parts.extend([part[:half], part[half:]])
                continue
            await self._save_vectors(dict(zip([i for i, _ in part], vectors, strict=True)))
            run.embedded += len(part)
            self.metrics.increment("memory.backfilled", len(part))

    async def _embed_counted(self, texts: list[str], run: _Run) -> Vectors:
        run.requests += 1
        with self.metrics.timed("memory.embed"):
            return await self.embedder.embed(texts)

    async def _record_failures(self, reasons: dict[int, str]) -> None:
        if reasons:
            self.metrics.increment("memory.embed_set_aside", len(reasons))
            async with self._pool.write_transaction() as conn:
                await memory_store.record_failures(conn, reasons, EMBED_ATTEMPTS)

    async def _save_vectors(self, vectors: dict[int, Vector]) -> None:
        blobs = {entry_id: encode(vector) for entry_id, vector in vectors.items()}
        async with self._pool.write_transaction() as conn:
            model, dimension = self.embedder.model, self.embedder.dimension
            await memory_store.set_embeddings(conn, model, dimension, blobs)
