"""The isolation seam: every transaction of a pool becomes a savepoint on one connection.

Installed around a test, it makes everything the code under test does - its own commits,
through any service, reads and writes alike - land inside one outer transaction that is
rolled back afterwards. Transactions are serialised on the pinned connection, so concurrent
callers still work; they just take turns.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection


class IsolationSeam:
    def __init__(self, conn: AsyncConnection) -> None:
        self.connection = conn
        self._turn = asyncio.Lock()

    @asynccontextmanager
    async def rolled_back(self) -> AsyncIterator[None]:
        """A savepoint around a block of work, rolled back after it (one example of many in
        a property test); the transactions inside it take their turns as usual."""
        async with self._turn:
            savepoint = await self.connection.begin_nested()
        try:
            yield
        finally:
            async with self._turn:
                await savepoint.rollback()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A savepoint: released where a transaction would commit, rolled back on error."""
        async with self._turn, self.connection.begin_nested():
            yield self.connection
