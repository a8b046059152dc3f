"""The connection pool: read and write transactions, one writer per process, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from devstream.config import Settings, store_file_exists
from devstream.db import generation, postgres, sqlite
from devstream.db.seam import IsolationSeam
from devstream.errors import (
    ConfigError,
    ConstraintViolation,
    PoolTimeout,
    StorageError,
    StoreClosed,
)


@dataclass
class PoolStats:
    size: int
    in_use: int = 0
    peak_in_use: int = 0
    waits: int = 0
    wait_time_s: float = 0.0
    writer_waits: int = 0
    reads: int = 0
    writes: int = 0
    timeouts: int = 0

    def as_dict(self) -> dict[str, float]:
        return {name: float(value) for name, value in asdict(self).items()}


class ConnectionPool:
    """Owns the engine. Reads share a small pool; on SQLite writes go one at a time per
    process (PostgreSQL takes many writers: its rules hold by locks in the database)."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.on_sqlite = engine.dialect.name == "sqlite"
        # Engines sharing the pool whose connections carry an option from checkout on,
        # which saves setting it (a round trip through SQLAlchemy) on every transaction.
        self._writing = engine.execution_options(**{sqlite.WRITE_OPTION: True})
        self._migrating = self._writing.execution_options(**{sqlite.SAME_GENERATION_OPTION: True})
        # A read transaction reads one snapshot, as SQLite's does: on PostgreSQL, where
        # every connection is READ COMMITTED (each statement its own snapshot), it asks for
        # REPEATABLE READ, read only (an export's pages, a plan's progress, agree).
        self._reading = (
            engine
            if self.on_sqlite
            else engine.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        )
        # A lone statement: SQLite's connect handler skips its BEGIN; asyncpg in autocommit
        # sends neither BEGIN nor COMMIT (two round trips fewer).
        lone = (
            {sqlite.AUTOCOMMIT_OPTION: True}
            if self.on_sqlite
            else {"isolation_level": "AUTOCOMMIT"}
        )
        self._autocommit = engine.execution_options(**lone)
        self.settings = settings
        self.stats = PoolStats(size=settings.pool_size)
        self._writer = asyncio.Lock()
        self._seam: IsolationSeam | None = None
        self._demand = 0
        self._closed = False
        # One connection kept checked out between lone statements (a search's fetch, a store
        # on PostgreSQL), for one of them at a time: SQLAlchemy's checkout and return cost
        # more than such a statement. It goes back to the pool whenever another caller would
        # otherwise wait for it.
        self._kept: AsyncConnection | None = None
        self._kept_lent = False
        self._disposals = 0  # by close() and reconnect(): a connection lent across one is not kept

    @classmethod
    def create(cls, settings: Settings) -> ConnectionPool:
        if settings.database_url.startswith(postgres.DRIVER + "://"):
            return cls(postgres.create_engine(settings), settings)
        if settings.sqlite_path is None:
            raise ConfigError(
                f"unsupported database {settings.shown_database!r}: DevStream stores in "
                "SQLite (a file path or sqlite+aiosqlite:///PATH) or PostgreSQL "
                "(postgresql+asyncpg://USER@HOST/DATABASE)"
            )
        path = settings.sqlite_path
        _prepare_sqlite_file(path)
        engine = create_async_engine(
            settings.database_url,
            async_creator=lambda: sqlite.connect(path),
            poolclass=AsyncAdaptedQueuePool,
            pool_size=settings.pool_size,
            max_overflow=0,
            pool_timeout=settings.pool_timeout_s,
            # The reset handler (db/sqlite.py) rolls back only what is still open.
            pool_reset_on_return=None,
        )
        sqlite.configure(engine, settings)
        return cls(engine, settings)

    @property
    def concurrent_reads(self) -> bool:
        """Whether a second read transaction can run beside an open one: not under the
        isolation seam (every transaction waits for the one before it), nor on a pool of one
        connection."""
        return self._seam is None and self.stats.size > 1

    def open_connections(self) -> int:
        """Connections the pool holds open, idle or checked out."""
        pool = self.engine.sync_engine.pool
        return int(pool.checkedin() + pool.checkedout())  # type: ignore[attr-defined]

    async def close(self) -> None:
        """Close every connection; the pool refuses to give out any more."""
        self._closed = True
        self._disposals += 1
        await self._return_kept()
        await self.engine.dispose()

    async def reconnect(self) -> None:
        """Replace the idle connections: after a migration, new ones see its types (the
        `vector` codec on PostgreSQL)."""
        self._disposals += 1
        await self._return_kept()
        await self.engine.dispose(close=True)

    @asynccontextmanager
    async def read_transaction(self) -> AsyncIterator[AsyncConnection]:
        self.stats.reads += 1
        with self._translate_errors():
            async with self._transaction(self._reading) as conn:
                yield conn

    @asynccontextmanager
    async def read_statement(self) -> AsyncIterator[AsyncConnection]:
        """For a single read, atomic by itself: no BEGIN and no COMMIT around it."""
        self.stats.reads += 1
        async with self.autocommit() as conn:
            yield conn

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """For statements each atomic by itself, outside any transaction block (as CREATE
        INDEX CONCURRENTLY must run), on the connection kept for them unless another caller
        holds it; under the isolation seam, in its transaction instead."""
        with self._translate_errors():
            if self._seam is not None:
                async with self._seam.transaction() as conn:
                    yield conn
                return
            if self._kept_lent:
                async with self._checkout(self._autocommit) as conn:
                    yield conn
                return
            async with self._lent() as conn:
                yield conn

    @asynccontextmanager
    async def write_transaction(
        self, *, bump_generation: bool = True
    ) -> AsyncIterator[AsyncConnection]:
        """A write transaction; on SQLite it replaces the store-generation token as it begins
        (on PostgreSQL no row may be written by every transaction: it would serialise them,
        and search there needs no token).

        Only schema migrations opt out: the token's table may not exist yet (or any more).
        """
        self.stats.writes += 1
        writing = self._writing if bump_generation else self._migrating
        with self._translate_errors():
            async with self._writer_turn(), self._transaction(writing) as conn:
                yield conn

    @asynccontextmanager
    async def write_statements(self) -> AsyncIterator[AsyncConnection]:
        """For writes whose statements may each commit by itself (reads, then one change): on
        PostgreSQL in autocommit, two round trips fewer than BEGIN and COMMIT; on SQLite a
        write transaction, which replaces the store-generation token with the change."""
        if self.on_sqlite:
            async with self.write_transaction() as conn:
                yield conn
            return
        self.stats.writes += 1
        async with self.autocommit() as conn:
            yield conn

    def _translate_errors(self) -> contextlib.AbstractContextManager[None]:
        return _translated(self.on_sqlite)

    @property
    def seam(self) -> IsolationSeam | None:
        """The isolation seam installed by `isolated()`, if one is."""
        return self._seam

    @asynccontextmanager
    async def isolated(self) -> AsyncIterator[IsolationSeam]:
        """Route every transaction through one connection's savepoints, then roll all back."""
        await self._return_kept()  # the pool may have no other connection to give
        async with self.engine.connect() as conn:
            # Each transaction in the seam replaces the token in a savepoint of its own.
            options = {sqlite.WRITE_OPTION: True, sqlite.SAME_GENERATION_OPTION: True}
            await conn.execution_options(**options)
            outer = await conn.begin()
            self._seam = IsolationSeam(conn)
            try:
                yield self._seam
            finally:
                self._seam = None
                await outer.rollback()

    @asynccontextmanager
    async def _transaction(self, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        """A transaction on a connection of `engine` (one of the pool's options); on SQLite,
        a write transaction's BEGIN replaces the store-generation token (db/sqlite.py)."""
        if self._seam is None:
            async with self._checkout(engine) as conn, conn.begin():
                yield conn
            return
        async with self._seam.transaction() as conn:
            if engine is self._writing and self.on_sqlite:  # a savepoint: no BEGIN
                await generation.replace(conn)
            yield conn

    @asynccontextmanager
    async def _writer_turn(self) -> AsyncIterator[None]:
        if not self.on_sqlite:
            yield
            return
        if self._writer.locked():
            self.stats.writer_waits += 1
        async with self._writer:
            yield

    @asynccontextmanager
    async def _checkout(self, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        conn = await self._connect(engine)
        try:
            yield conn
        finally:
            await self._disconnect(conn)

    @asynccontextmanager
    async def _lent(self) -> AsyncIterator[AsyncConnection]:
        """The kept connection, for lone statements (checked out first if none is kept)."""
        self._kept_lent, disposals = True, self._disposals
        try:
            if self._kept is None:
                conn = await self._connect(self._autocommit)
            else:
                conn = self._kept
                self._count_in()
            self._kept = None  # kept again only once its statements have gone well
            try:
                yield conn
            except BaseException:
                await self._disconnect(conn)
                raise
            if disposals != self._disposals:  # the pool it came from is gone: close it outright
                await conn.invalidate()
                await self._disconnect(conn)
            elif self._demand > self.stats.size:  # a caller waits for its slot
                await self._disconnect(conn)
            else:
                self._count_out()
                self._kept = conn
        finally:
            self._kept_lent = False

    async def _connect(self, engine: AsyncEngine) -> AsyncConnection:
        if self._kept is not None and not self._kept_lent and self._demand + 1 >= self.stats.size:
            await self._return_kept()  # with it kept, the pool has no connection for this caller
        if self._closed:  # the engine would open new connections, which no one closes
            raise StoreClosed(f"the store {self.settings.shown_database} is closed")
        # Demand counts callers holding or queueing for a connection; past the pool's size,
        # a caller has to wait.
        if self._demand >= self.stats.size:
            self.stats.waits += 1
        self._demand += 1
        started = time.perf_counter()
        try:
            conn = await engine.connect()
        except BaseException as exc:
            self._demand -= 1  # timed out, cancelled or refused: no longer waiting
            if isinstance(exc, sa_exc.TimeoutError):
                self.stats.timeouts += 1
                raise PoolTimeout(
                    f"no database connection free after {self.settings.pool_timeout_s:g}s"
                ) from exc
            if isinstance(exc, OSError):  # a server that cannot be reached
                shown = self.settings.shown_database
                raise StorageError(f"cannot reach the database {shown}: {exc}") from exc
            raise
        finally:
            self.stats.wait_time_s += time.perf_counter() - started
        self._hold()
        return conn

    async def _disconnect(self, conn: AsyncConnection) -> None:
        self._count_out()
        await conn.close()

    def _count_in(self) -> None:
        """A caller holds a connection it did not have to check out (the kept one)."""
        self._demand += 1
        self._hold()

    def _hold(self) -> None:
        self.stats.in_use += 1
        self.stats.peak_in_use = max(self.stats.peak_in_use, self.stats.in_use)

    def _count_out(self) -> None:
        self.stats.in_use -= 1
        self._demand -= 1

    async def _return_kept(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            await kept.close()


def _prepare_sqlite_file(path: Path) -> None:
    """Refuse a path that cannot hold a database before the driver tries (and leaks a thread)."""
    if store_file_exists(path) and not path.is_file():
        raise StorageError(f"cannot use {path} as a database: it is not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create database folder {path.parent}: {exc}") from exc


@contextmanager
def _translated(on_sqlite: bool) -> Iterator[None]:
    try:
        yield
    except sa_exc.IntegrityError as exc:
        raise ConstraintViolation(f"rejected by the database: {exc.orig}") from exc
    except sa_exc.DBAPIError as exc:
        backend = sqlite if on_sqlite else postgres
        raise backend.storage_error(exc.orig) from exc
