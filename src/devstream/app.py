"""The facade: one object that owns the pool, the metrics registry and the services.

The memory service and the workflow are built on first use: they bring numpy and the
search indexes, which a command about tasks alone does not need to load.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from devstream import checks
from devstream.config import Settings, load_settings
from devstream.db import revision
from devstream.db.pool import ConnectionPool
from devstream.db.queries import QueryManager
from devstream.errors import InvalidInput, NotInitialised
from devstream.memory.embedders import DeferredEmbedder
from devstream.metrics import MetricsRegistry, resource_usage
from devstream.stats import store_figures
from devstream.tasks import TaskService
from devstream.vocabulary import HASHING_MODEL

if TYPE_CHECKING:
    from devstream.db.migrate import SchemaStatus
    from devstream.memory import Embedder, MemoryIndex, MemoryService
    from devstream.workflow import Workflow


class DevStream:
    """`async with DevStream.open(...) as ds:` is the way in; it closes the pool on exit."""

    def __init__(
        self,
        settings: Settings,
        pool: ConnectionPool,
        embedder: Embedder | None = None,
        *,
        memory_index: MemoryIndex | None = None,
    ) -> None:
        """Compose a facade on an open pool; `open()` is the usual way in."""
        self.settings = settings
        self.pool = pool
        self.metrics = MetricsRegistry()
        self.metrics.register_gauge("pool", pool.stats.as_dict)
        self.queries = QueryManager(pool, self.metrics)
        self.metrics.register_gauge(
            "resources", lambda: {**resource_usage(), "open_connections": pool.open_connections()}
        )
        self.tasks = TaskService(self.queries, self.metrics)
        self._embedder = embedder
        self._memory_index = memory_index

    @cached_property
    def memory(self) -> MemoryService:
        from devstream.memory import MemoryService  # noqa: PLC0415

        embedder = self._embedder or embedder_for(self.settings)
        memory = MemoryService(
            self.pool, self.metrics, embedder, self.settings, index=self._memory_index
        )
        if self.pool.on_sqlite:
            # Looked up when read: the index is built on a first search, not here.
            self.metrics.register_gauge("memory_index", lambda: memory.index.footprint())  # noqa: PLW0108
        return memory

    @cached_property
    def workflow(self) -> Workflow:
        from devstream.workflow import Workflow  # noqa: PLC0415

        return Workflow(self.tasks, self.memory, self.pool, self.metrics)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        target: Settings | str | os.PathLike[str] | None = None,
        *,
        migrate_schema: bool = True,
        create_schema: bool = True,
        embedder: Embedder | None = None,
    ) -> AsyncIterator[DevStream]:
        """Open a store from settings, a database path or URL, or the layered defaults.

        The schema is brought to head unless `migrate_schema` is false, in which case a
        database that is not at head is refused with a typed error; without
        `create_schema`, a database with no DevStream schema at all is refused too, rather
        than given one. `embedder` replaces the one the settings name.
        """
        settings = _settings_for(target)
        pool = ConnectionPool.create(settings)
        try:
            stamp = await revision.stamped(pool)
            if stamp is None and (refusal := await revision.foreign_refusal(pool)):
                raise refusal
            if stamp is None and not create_schema:
                raise NotInitialised(f"{settings.shown_database} holds no DevStream store")
            if stamp != revision.HEAD:
                # Missing, behind or unknown: only now is Alembic worth loading.
                from devstream.db import migrate  # noqa: PLC0415

                await migrate.ensure_current(pool, migrate=migrate_schema)
                await pool.reconnect()  # connections that predate the schema's types
            ds = cls(settings, pool, embedder)
            try:
                yield ds
            finally:
                await ds.aclose()
        finally:
            await pool.close()

    async def aclose(self) -> None:
        """Close what the services opened (the embedder's client); the pool is the caller's."""
        if "memory" in self.__dict__:
            await self.memory.embedder.aclose()

    async def schema_status(self) -> SchemaStatus:
        """Where the store's schema stands against this version's migrations."""
        from devstream.db import migrate  # noqa: PLC0415

        return await migrate.status(self.pool)

    def stats(self) -> dict[str, object]:
        """This process's metrics: counters, latencies and gauges."""
        return self.metrics.snapshot()

    async def report(self) -> dict[str, object]:
        """What `devstream stats` prints: the store's own figures, then this process's."""
        return {"store": await store_figures(self.pool), "process": self.stats()}


def embedder_for(settings: Settings) -> Embedder:
    """Ollama when a URL is configured; otherwise the offline hashing embedder."""
    if settings.ollama_url:
        # httpx and tenacity cost every command tens of milliseconds; only Ollama needs them.
        from devstream.memory.ollama import OllamaEmbedder  # noqa: PLC0415

        return OllamaEmbedder(
            settings.ollama_url,
            settings.embed_model,
            settings.embed_dimension,
            timeout_s=settings.ollama_timeout_s,
            deadline_s=settings.embed_deadline_s,
        )
    from devstream.memory.hashing import HashingEmbedder  # noqa: PLC0415

    return HashingEmbedder(settings.embed_dimension)


def deferred_embedder_for(settings: Settings) -> Embedder:
    """The model and dimension `embedder_for` would give, without loading or calling it."""
    model = settings.embed_model if settings.ollama_url else HASHING_MODEL
    return DeferredEmbedder(model, settings.embed_dimension)


def _settings_for(target: Settings | str | os.PathLike[str] | None) -> Settings:
    if isinstance(target, Settings):
        return target
    if target is not None and not isinstance(target, (str, os.PathLike)):
        raise InvalidInput(
            f"a store is opened from Settings, a path or a URL, not {checks.shown(target)}"
        )
    return load_settings({"db": None if target is None else os.fspath(target)})
