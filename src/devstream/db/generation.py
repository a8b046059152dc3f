"""The store-generation token: a fresh random value on every write transaction.

Caches built from the store remember the token they were built at; any difference means
"rebuild". A random token (not a counter) cannot repeat after a rollback.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream.db.schema import store_state


@dataclass
class Change:
    """Lets a cache follow one write transaction of its own process.

    As the transaction begins (holding the write lock) the cache's token is read into
    `expected`; `continued` says whether the store was still at it, and `after` is the
    token the transaction sets. `on_commit` runs once it has committed, before the next
    writer may begin: only with `continued` may the cache apply the transaction's own
    changes and move to `after`; otherwise it must rebuild.
    """

    cache_token: Callable[[], str | None]
    on_commit: Callable[[Change], None]
    expected: str | None = None
    after: str | None = None
    continued: bool = False


def new_token() -> str:
    return secrets.token_hex(16)


async def replace(conn: AsyncConnection, expected: str | None = None) -> tuple[str, bool]:
    """Put a new token in place; returns it, and whether the old one was `expected`.

    One statement when it was (the common case for a cache that follows its own writes).
    """
    token = new_token()
    if expected is not None:
        swapped = await conn.execute(_SWAP, {"expected": expected, "token": token})
        if swapped.rowcount == 1:
            return token, True
    await conn.execute(_SET, {"token": token})
    return token, False


async def current(conn: AsyncConnection) -> str:
    return str((await conn.execute(_CURRENT)).scalar_one())


# Built once: these run in every write transaction, and building a statement costs more
# than running it.
_ROW = store_state.c.id == 1
_SET = update(store_state).where(_ROW).values(generation=bindparam("token"))
_SWAP = _SET.where(store_state.c.generation == bindparam("expected"))
_CURRENT = select(store_state.c.generation).where(_ROW)
