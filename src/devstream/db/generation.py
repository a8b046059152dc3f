"""The store-generation token: a fresh random value on every write transaction.

Caches built from the store remember the token they were built at; any difference means
"rebuild". A random token (not a counter) cannot repeat after a rollback.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream.db.schema import store_state


@dataclass
class Change:
    """The token a write transaction started from, and the one it committed."""

    before: str | None = None
    after: str | None = None


def new_token() -> str:
    return secrets.token_hex(16)


async def current(conn: AsyncConnection) -> str:
    result = await conn.execute(select(store_state.c.generation).where(store_state.c.id == 1))
    return str(result.scalar_one())
