"""A process that stores memories until it is killed, printing the ids of each committed batch.

Run as `python -m tests.integration.memory_writer DB`; the crash test kills it mid-write
and checks that every id it printed survived.
"""

from __future__ import annotations

import asyncio
import sys

from devstream import DevStream, Settings
from devstream.memory.service import NewMemory


async def write_until_killed(db: str) -> None:
    async with DevStream.open(Settings(db=db), migrate_schema=False) as ds:
        batch = 0
        while True:
            notes = [
                NewMemory(f"crash note {batch}-{k}: written before the power cut", "context")
                for k in range(5)
            ]
            results = await ds.memory.store_many(notes)
            print(*(result.entry.id for result in results), flush=True)
            batch += 1


def main() -> None:
    asyncio.run(write_until_killed(sys.argv[1]))


if __name__ == "__main__":
    main()
