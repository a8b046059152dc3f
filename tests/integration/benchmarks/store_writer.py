"""A process that stores COUNT memories through the public API, then exits.

Run as `python -m tests.integration.benchmarks.store_writer DB COUNT LABEL [BATCH] [--go]`:
one `store` call per memory (BATCH 1, the default) or `store_many` batches of BATCH. Every
content is unique to LABEL, so nothing is taken for a duplicate. With `--go` it opens the
store, prints "ready" and waits for a line on stdin before writing, so that several writers
start together once their interpreters are up. Exits non-zero with the error on stderr if
any store fails (a "database is locked" included). Once its last store has returned and
the store is closed it prints COUNT and the `time.monotonic()` of that moment (the clock is
the machine's, so moments of several processes compare); what is left is the interpreter's
exit.
"""

from __future__ import annotations

import asyncio
import sys
import time

from devstream import DevStream, Settings
from devstream.memory.service import NewMemory


def content(label: str, n: int) -> str:
    return f"{label} note {n}: stored by a writer while another process searches"


async def store(db: str, count: int, label: str, batch: int, wait_for_go: bool) -> None:
    async with DevStream.open(Settings(db=db), migrate_schema=False) as ds:
        if wait_for_go:
            print("ready", flush=True)
            sys.stdin.readline()  # nothing else runs on this loop yet
        for start in range(0, count, batch):
            numbers = range(start, min(start + batch, count))
            if batch == 1:
                await ds.memory.store(content(label, start), "context")
            else:
                await ds.memory.store_many(
                    [NewMemory(content(label, n), "context") for n in numbers]
                )
    print(count, time.monotonic(), flush=True)


def main() -> None:
    args = [arg for arg in sys.argv[1:] if arg != "--go"]
    db, count, label = args[0], int(args[1]), args[2]
    batch = int(args[3]) if len(args) > 3 else 1
    asyncio.run(store(db, count, label, batch, wait_for_go="--go" in sys.argv[1:]))


if __name__ == "__main__":
    main()
