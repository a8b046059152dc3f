"""One OS process of the multi-process test: writes plans into a shared SQLite file.

Run as `python -m tests.integration.concurrent_writer DB WRITES LABEL`; exits non-zero and
prints the error if any write fails (a "database is locked" included), else prints the
longest any one write took, in seconds, as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from devstream import DevStream, Settings


async def write_plans(db: str, writes: int, label: str) -> float:
    """The longest write, in seconds (a wait for the write lock included)."""
    longest = 0.0
    async with DevStream.open(Settings(db=db), migrate_schema=False) as ds:
        for number in range(writes):
            started = time.perf_counter()
            plan = await ds.queries.plans.create(title=f"{label}-{number}")
            await ds.queries.plans.update(plan.id, status="active")
            longest = max(longest, time.perf_counter() - started)
            await ds.queries.plans.get(plan.id)
    return longest


def main() -> None:
    db, writes, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    print(json.dumps({"longest_s": asyncio.run(write_plans(db, writes, label))}))


if __name__ == "__main__":
    main()
