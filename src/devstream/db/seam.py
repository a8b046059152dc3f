"""The isolation seam: every transaction of a pool becomes a savepoint on one connection.

Installed around a test, it makes everything the code under test does - its own commits,
through any service, reads and writes alike - land inside one outer transaction that is
rolled back afterwards. Transactions are serialised on the pinned connection, so concurrent
callers still work; they just take turns.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection

from devstream.db.sqlite import Driver


class IsolationSeam:
    def __init__(self, conn: AsyncConnection, driver: Driver) -> None:
        self.connection = conn
        self.driver = driver
        self._turn = asyncio.Lock()
        self._names = itertools.count(1)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A savepoint: released where a transaction would commit, rolled back on error."""
        async with self._turn:
            name = f"seam_{next(self._names)}"
            await self.driver.savepoint(name)
            try:
                yield self.connection
            except BaseException:
                await self.driver.rollback_to(name)
                raise
            await self.driver.release(name)
