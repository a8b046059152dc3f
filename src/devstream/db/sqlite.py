"""SQLite specifics: the connection, its pragmas, and DevStream (not the driver) issues BEGIN.

pysqlite/aiosqlite start transactions lazily and not before SAVEPOINT, which breaks nested
transactions; with autocommit at the driver level and BEGIN issued on SQLAlchemy's `begin`
event, savepoints nest properly and writes can ask for BEGIN IMMEDIATE.

aiosqlite runs every call on a thread of its own, and each call is a round trip between
threads (tens of microseconds). Its cursors cost one round trip to open, one to execute,
one to fetch and one to close; DevStream's cursor does all four in one. Results are always
fully fetched, which is all SQLAlchemy's async adapter asks of a cursor here. A write
transaction's BEGIN IMMEDIATE and its new store-generation token go in one round trip too,
and the pool skips its reset rollback when the driver reports no open transaction.

`DriverQuery` goes one step further for the hottest read (a search's fetch): SQLAlchemy
compiles it once and types its results, but it runs on the driver connection directly, on
the event loop's own thread. Waking the driver's thread and back costs more than that short
read (0.2 ms on an idle machine, milliseconds on a busy one). The loop never waits for a lock
there: the read runs with busy_timeout 0, and one that would wait goes to the driver's
thread like any other statement, which waits as configured.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import aiosqlite
from sqlalchemy import Select, event
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolResetState
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.util import await_only

from devstream.config import Settings
from devstream.db import generation
from devstream.errors import StorageBusy, StorageError, StorageFull

# Execution options: the transaction will write; a lone statement needs no transaction; a
# write transaction leaves the store-generation token alone (a schema migration, before
# whose end the token's table may not exist).
WRITE_OPTION = "devstream_write"
AUTOCOMMIT_OPTION = "devstream_autocommit"
SAME_GENERATION_OPTION = "devstream_same_generation"
# aiosqlite's default for iterating results in chunks; our cursors fetch everything at once.
_ITER_CHUNK_SIZE = 64
_LOCKED = "database is locked"  # SQLite's message for SQLITE_BUSY
_DIALECT = SQLiteDialect_aiosqlite()

Row = tuple[Any, ...]
Description = tuple[tuple[Any, ...], ...] | None


def pragmas(settings: Settings) -> dict[str, str | int]:
    """The pragmas every connection runs with: the production settings, tests included."""
    return {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": settings.busy_timeout_ms,
        "synchronous": "normal",
    }


class OneTripCursor:
    """A DB-API cursor for SQLAlchemy's aiosqlite adapter: one thread round trip per call."""

    arraysize = 1

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self._rows: list[Row] = []
        self.description: Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    # SQLAlchemy 2.0 awaits the cursor; 2.1 enters it as a context. Both cost nothing here.
    def __await__(self) -> Generator[Any, None, OneTripCursor]:
        return self.__aenter__().__await__()

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> OneTripCursor:
        return await self._run(lambda cursor: cursor.execute(sql, parameters))

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> OneTripCursor:
        return await self._run(lambda cursor: cursor.executemany(sql, parameters))

    async def _run(self, action: Any) -> OneTripCursor:
        outcome = await self._connection.in_thread(partial(_execute_all, action))
        self._rows, self.description, self.rowcount, self.lastrowid = outcome
        return self

    async def fetchall(self) -> list[Row]:
        taken, self._rows = self._rows, []
        return taken

    async def close(self) -> None:
        self._rows = []


def _execute_all(
    action: Any, connection: sqlite3.Connection
) -> tuple[list[Row], Description, int, int | None]:
    """On the driver's thread: open a cursor, run, fetch everything, close."""
    cursor = connection.cursor()
    try:
        action(cursor)
        rows = cursor.fetchall() if cursor.description else []
        return rows, cursor.description, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors make one round trip per statement."""

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)

    # Ending a transaction that was never begun (a lone statement) costs no round trip.
    async def commit(self) -> None:
        if self.in_transaction:
            await super().commit()

    async def rollback(self) -> None:
        if self.in_transaction:
            await super().rollback()

    async def in_thread(self, function: Any) -> Any:
        """Run `function(sqlite3_connection)` on the connection's thread."""
        queue = cast("Callable[[Callable[[], Any]], Awaitable[Any]]", self._execute)
        return await queue(lambda: function(self._conn))

    def read_without_waiting(self, sql: str, values: tuple[Any, ...]) -> list[Row] | None:
        """Run a read on the caller's thread, or None if it would wait for a lock.

        Only for a connection its caller holds checked out: nothing else runs on it then.
        """
        connection = self._conn
        ((timeout,),) = connection.execute("PRAGMA busy_timeout").fetchall()
        connection.execute("PRAGMA busy_timeout = 0")
        try:
            return _fetch_all(sql, values, connection)
        except sqlite3.OperationalError as exc:
            if _LOCKED in str(exc):
                return None
            raise
        finally:
            connection.execute(f"PRAGMA busy_timeout = {int(timeout)}")


class _Compiled:
    """A statement compiled for SQLite once, run at the driver level with its parameters in
    the order the compiled text takes them."""

    def __init__(self, statement: ClauseElement) -> None:
        compiled = cast("SQLCompiler", statement.compile(dialect=_DIALECT))
        self.sql = str(compiled)
        self._parameters = compiled.positiontup or []
        self._defaults = compiled.params  # values bound in the statement itself

    def values(self, **parameters: Any) -> tuple[Any, ...]:
        given = {**self._defaults, **parameters}
        return tuple(given[name] for name in self._parameters)


class DriverQuery(_Compiled):
    """A read statement compiled once and run in one driver round trip, bypassing
    SQLAlchemy's per-execution work (which costs more than SQLite's own for a small read).

    Parameters are passed to SQLite as given; results go through the columns' types.
    """

    def __init__(self, statement: Select[Any]) -> None:
        super().__init__(statement)
        self._processors = [
            (index, processor)
            for index, column in enumerate(statement.selected_columns)
            if (processor := column.type.dialect_impl(_DIALECT).result_processor(_DIALECT, None))
        ]

    async def all(self, conn: AsyncConnection, **parameters: Any) -> list[Row]:
        values = self.values(**parameters)
        # The connection the caller holds (a seam's included), at the driver level.
        pooled = conn.sync_connection.connection  # type: ignore[union-attr]
        driver = cast("OneTripConnection", pooled.driver_connection)
        try:
            rows = driver.read_without_waiting(self.sql, values)
            if rows is None:
                rows = await driver.in_thread(partial(_fetch_all, self.sql, values))
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc
        return [self._typed(row) for row in rows]

    def _typed(self, row: Row) -> Row:
        values = list(row)
        for index, processor in self._processors:
            values[index] = processor(values[index])
        return tuple(values)


_NEW_TOKEN = _Compiled(generation.SET)


def storage_error(error: object) -> StorageError:
    """The typed error for a failure SQLite reported (the message is SQLite's own)."""
    message = f"database error: {error}"
    if "database or disk is full" in str(error):
        return StorageFull(message)
    if _LOCKED in str(error):
        return StorageBusy(message)
    if "readonly database" in str(error):
        return StorageError(message, hint="the store's folder cannot be written: read it only")
    return StorageError(message)


def _read_only_folder(path: Path) -> bool:
    """Whether the store exists in a folder that cannot be written (a read-only mount), with
    no write-ahead log beside it that a reader would have to apply."""
    wal = path.with_name(path.name + "-wal")
    return (
        path.is_file()
        and not os.access(path.parent, os.W_OK)
        and not (wal.exists() and wal.stat().st_size > 0)
    )


def _immutable(path: Path) -> str:
    """The store as a read-only, immutable URI. A reader in WAL mode needs its -shm file
    beside the store, which such a folder cannot hold; nothing can change the store there
    meanwhile, so SQLite may read it as it stands, without locks."""
    return f"file:{urllib.parse.quote(str(path))}?mode=ro&immutable=1"


def _begin_writing(token: str | None, connection: sqlite3.Connection) -> None:
    """On the driver's thread: BEGIN IMMEDIATE, which takes the write lock up front (a writer
    waits on busy_timeout there instead of failing when it upgrades a read lock halfway),
    and the transaction's new store-generation token, in one round trip."""
    connection.execute("BEGIN IMMEDIATE")
    if token is not None:
        connection.execute(_NEW_TOKEN.sql, _NEW_TOKEN.values(token=token))


def _fetch_all(sql: str, values: tuple[Any, ...], connection: sqlite3.Connection) -> list[Row]:
    cursor = connection.execute(sql, values)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


async def connect(path: Path) -> OneTripConnection:
    # Not bound to the driver's thread: `read_without_waiting` reads on the loop's.
    if _read_only_folder(path):
        connector = partial(sqlite3.connect, _immutable(path), uri=True, check_same_thread=False)
    else:
        connector = partial(sqlite3.connect, str(path), check_same_thread=False)
    connection = OneTripConnection(connector, _ITER_CHUNK_SIZE)
    connection._thread.daemon = True  # as SQLAlchemy does: never hold up interpreter exit
    await connection
    return connection


def configure(engine: AsyncEngine, settings: Settings) -> None:
    """Install the connection, begin and reset handlers (engine made with reset_on_return=None)."""
    wanted = pragmas(settings)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for name, value in wanted.items():
                cursor.execute(f"PRAGMA {name} = {value}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get(AUTOCOMMIT_OPTION, False):
            return
        if not options.get(WRITE_OPTION, False):
            connection.exec_driver_sql("BEGIN")
            return
        token = None if options.get(SAME_GENERATION_OPTION, False) else generation.new_token()
        driver = cast("OneTripConnection", connection.connection.driver_connection)
        try:
            await_only(driver.in_thread(partial(_begin_writing, token)))
        except sqlite3.Error as exc:  # raised past the driver's cursor, which SQLAlchemy wraps
            raise storage_error(exc) from exc

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: object, _state: PoolResetState) -> None:
        # The driver knows whether a transaction is still open; after a commit there is
        # nothing to roll back, so the round trip is skipped.
        if dbapi_connection.driver_connection.in_transaction:
            dbapi_connection.rollback()
