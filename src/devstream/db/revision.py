"""The schema revision this code expects, and the one a database is stamped with.

Reading the stamp needs no Alembic, so opening a database that is already at head stays
cheap; `devstream.db.migrate` (Alembic) decides and acts on everything else.
"""

from __future__ import annotations

from sqlalchemy import String, column, inspect, select, table
from sqlalchemy.engine import Connection

from devstream.db.pool import ConnectionPool
from devstream.errors import StorageError

# The newest migration in db/migrations/versions; a unit test keeps the two equal.
HEAD = "0009"

# Alembic's own bookkeeping table (its default name and column).
_VERSION_NUM = column("version_num", String)
_VERSION = table("alembic_version", _VERSION_NUM)


async def stamped(pool: ConnectionPool) -> str | None:
    """The revision the database is stamped with; None when it has no DevStream schema."""

    def read(sync: Connection) -> str | None:
        if not inspect(sync).has_table(_VERSION.name):
            return None
        return sync.scalar(select(_VERSION_NUM))

    async with pool.read_transaction() as conn:
        return await conn.run_sync(read)


async def foreign_tables(pool: ConnectionPool) -> list[str]:
    """The tables of a database with no DevStream schema: another application's (Alembic's
    own bookkeeping table aside, which an unstamped store may hold)."""
    async with pool.read_transaction() as conn:
        names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    return sorted(name for name in names if name != _VERSION.name)


async def foreign_refusal(pool: ConnectionPool) -> StorageError | None:
    """Why a database with no DevStream schema cannot be given one: it holds another
    application's tables (None: it holds none)."""
    others = await foreign_tables(pool)
    if not others:
        return None
    return StorageError(
        f"{pool.settings.shown_database} holds another application's tables "
        f"({', '.join(others[:3])}{', …' if len(others) > 3 else ''}) and no DevStream store",
        hint="give DevStream a database of its own: a new file, or an empty PostgreSQL database",
    )
