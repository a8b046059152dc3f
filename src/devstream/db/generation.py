"""The store-generation token: a fresh random value on every write transaction.

Caches built from the store remember the token they were built at; any difference means
the store changed. A random token (not a counter) cannot repeat after a rollback, and it
comes from `secrets`, which test plugins do not reseed.
"""

from __future__ import annotations

import secrets

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream.db.schema import store_state


def new_token() -> str:
    return secrets.token_hex(16)


async def replace(conn: AsyncConnection) -> str:
    """Put a new token in place and return it."""
    token = new_token()
    await conn.execute(SET, {"token": token})
    return token


async def current(conn: AsyncConnection) -> str:
    return str((await conn.execute(_CURRENT)).scalar_one())


# Built once: these run in every write transaction, and building a statement costs more
# than running it (on SQLite, `SET` runs with BEGIN: db/sqlite.py).
_ROW = store_state.c.id == 1
SET = update(store_state).where(_ROW).values(generation=bindparam("token"))
_CURRENT = select(store_state.c.generation).where(_ROW)
