"""Alembic, driven from async code: upgrade, downgrade, and where a database stands."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from devstream.db.pool import ConnectionPool
from devstream.db.revision import stamped
from devstream.db.schema import PREREQUISITE_FK, is_search_object, metadata
from devstream.db.types import PgVector
from devstream.errors import NotInitialised, SchemaError, SchemaTooNew, SchemaTooOld

SCRIPT_LOCATION = "devstream.db:migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    """The migrations shipped in the package; read once per process."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None, "the package ships at least one migration"
    return head


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def known(self) -> bool:
        """Whether this version of DevStream knows the database's revision."""
        if self.current is None:
            return True
        try:
            _scripts().get_revision(self.current)
        except CommandError:
            return False
        return True

    def refusal(self, *, migrate: bool) -> SchemaError | None:
        """Why this database cannot be used as it is, or None if it can (maybe after upgrade)."""
        if self.at_head:
            return None
        if not self.known:
            return SchemaTooNew(
                f"database schema revision {self.current} is newer than this DevStream "
                f"({self.head})"
            )
        if migrate:
            return None
        if self.current is None:
            return NotInitialised("the database has no DevStream schema")
        return SchemaTooOld(f"database schema {self.current} is behind {self.head}")


async def upgrade(pool: ConnectionPool, revision: str = "head") -> None:
    async with pool.write_transaction(bump_generation=False) as conn:
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def downgrade(pool: ConnectionPool, revision: str) -> None:
    async with pool.write_transaction(bump_generation=False) as conn:
        await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))


async def status(pool: ConnectionPool) -> SchemaStatus:
    return SchemaStatus(current=await stamped(pool), head=head_revision())


async def schema_drift(pool: ConnectionPool, target: MetaData = metadata) -> list[Any]:
    """Differences between the live schema and `target`; empty when they agree."""

    def compare(sync: Connection) -> list[Any]:
        skipped = {PREREQUISITE_FK} if sync.dialect.name == "postgresql" else set()
        if skipped:
            # Reflection learns pgvector's type, for this engine's dialect only.
            dialect: Any = sync.dialect
            dialect.ischema_names = {**dialect.ischema_names, "vector": PgVector}

        def include(_object: object, name: str | None, *_: object) -> bool:
            return not is_search_object(name) and name not in skipped

        context = MigrationContext.configure(sync, opts={"include_object": include})
        return list(compare_metadata(context, target))

    async with pool.read_transaction() as conn:
        return await conn.run_sync(compare)


async def ensure_current(pool: ConnectionPool, *, migrate: bool) -> SchemaStatus:
    """Bring the schema to head when allowed; otherwise say exactly why it cannot be used."""
    state = await status(pool)
    refusal = state.refusal(migrate=migrate)
    if refusal is not None:
        raise refusal
    if state.at_head:
        return state
    await upgrade(pool)
    return await status(pool)
