"""SQLite specifics: pragmas on every connection, and DevStream (not the driver) issues BEGIN.

pysqlite/aiosqlite start transactions lazily and not before SAVEPOINT, which breaks nested
transactions; with autocommit at the driver level and BEGIN issued explicitly, savepoints
nest properly and writes can ask for BEGIN IMMEDIATE.

Each statement SQLAlchemy runs through aiosqlite costs three round trips to the driver's
thread (open cursor, execute, close). DevStream's own bookkeeping statements - BEGIN, the
generation token, the seam's savepoints - go to the driver directly in one, and the pool
skips its reset rollback when no transaction is open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolResetState

from devstream.config import Settings

# Execution options: the transaction will write; BEGIN was already issued on the driver.
WRITE_OPTION = "devstream_write"
BEGUN_OPTION = "devstream_begun"

DriverExecute = Callable[..., Awaitable[object]]


def pragmas(settings: Settings) -> dict[str, str | int]:
    """The pragmas every connection runs with: the production settings, tests included."""
    return {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": settings.busy_timeout_ms,
        "synchronous": "normal",
    }


def begin_statement(*, write: bool) -> str:
    # IMMEDIATE takes the write lock up front, so a writer waits on busy_timeout
    # instead of failing when it upgrades a read lock mid-transaction.
    return "BEGIN IMMEDIATE" if write else "BEGIN"


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
        if not options.get(BEGUN_OPTION, False):
            connection.exec_driver_sql(begin_statement(write=options.get(WRITE_OPTION, False)))

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: object, _state: PoolResetState) -> None:
        # The driver knows whether a transaction is still open; after a commit there is
        # nothing to roll back, so the round trip is skipped.
        if dbapi_connection.driver_connection.in_transaction:
            dbapi_connection.rollback()


class Driver:
    """DevStream's bookkeeping statements, each one round trip on the aiosqlite driver.

    They run below SQLAlchemy, which sees only the transaction it was told about.
    """

    def __init__(self, execute: DriverExecute) -> None:
        self._execute = execute

    @classmethod
    async def of(cls, conn: AsyncConnection) -> Driver:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        return cls(cast("DriverExecute", driver.execute_fetchall))

    async def begin(self, conn: AsyncConnection, *, write: bool) -> None:
        """BEGIN on the driver, and tell SQLAlchemy's begin handler it is done."""
        await self._execute(begin_statement(write=write))
        await conn.execution_options(**{BEGUN_OPTION: True})

    async def generation(self) -> str:
        rows: Any = await self._execute("SELECT generation FROM store_state WHERE id = 1")
        return str(rows[0][0])

    async def set_generation(self, token: str) -> None:
        await self._execute("UPDATE store_state SET generation = ? WHERE id = 1", (token,))

    async def savepoint(self, name: str) -> None:
        await self._execute(f"SAVEPOINT {name}")

    async def rollback_to(self, name: str) -> None:
        await self._execute(f"ROLLBACK TO {name}")
        await self._execute(f"RELEASE {name}")

    async def release(self, name: str) -> None:
        await self._execute(f"RELEASE {name}")
