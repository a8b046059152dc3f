"""One OS process of the concurrent-invariant tests: opens the store, waits for "go" on stdin
(so that every process starts its writes at once), does one kind of work, prints JSON.

    python -m tests.integration.invariant_worker DB ACTION [ARGUMENT ...]

Actions:
- `store N`: store the same N memories every process stores -> {"created": [...]}
- `claim`: start ready tasks until none is left -> {"started": [ids]}
- `depend TASK ON`: add one dependency -> {"added": bool} (a refused cycle is false)
- `complete TASK`: complete one active task -> {"completed": id}
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from devstream import DevStream, Settings
from devstream.errors import DependencyCycle


async def act(ds: DevStream, action: str, arguments: list[str]) -> dict[str, Any]:
    if action == "store":
        results = await ds.memory.store_many([_note(n) for n in range(int(arguments[0]))])
        return {"created": [r.entry.id for r in results if r.created]}
    if action == "claim":
        started = []
        while (claimed := await ds.workflow.start_next(budget=100)) is not None:
            started.append(claimed.task.id)
        return {"started": started}
    if action == "depend":
        task, on = int(arguments[0]), int(arguments[1])
        try:
            await ds.tasks.add_dependency(task, on)
        except DependencyCycle:
            return {"added": False}
        return {"added": True}
    if action == "complete":
        done = await ds.workflow.complete_task(int(arguments[0]), "done in its own process")
        return {"completed": done.task.id}
    raise SystemExit(f"unknown action {action!r}")


def _note(n: int) -> Any:
    from devstream.memory.service import NewMemory  # noqa: PLC0415

    return NewMemory(f"shared note {n}: the same words in every process", "learning")


async def main(db: str, action: str, arguments: list[str]) -> None:
    async with DevStream.open(Settings(db=db), migrate_schema=False) as ds:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # "go"
        print(json.dumps(await act(ds, action, arguments)), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
