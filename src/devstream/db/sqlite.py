"""SQLite specifics: pragmas on every connection, and DevStream (not the driver) issues BEGIN.

pysqlite/aiosqlite start transactions lazily and not before SAVEPOINT, which breaks nested
transactions; with autocommit at the driver level and BEGIN emitted on SQLAlchemy's `begin`
event, savepoints nest properly and writes can ask for BEGIN IMMEDIATE.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from devstream.config import Settings

# Execution option a connection carries when its transaction will write.
WRITE_OPTION = "devstream_write"


def pragmas(settings: Settings) -> dict[str, str | int]:
    """The pragmas every connection runs with: the production settings, tests included."""
    return {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": settings.busy_timeout_ms,
        "synchronous": "normal",
    }


def configure(engine: AsyncEngine, settings: Settings) -> None:
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
        # IMMEDIATE takes the write lock up front, so a writer waits on busy_timeout
        # instead of failing when it upgrades a read lock mid-transaction.
        writes = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")
