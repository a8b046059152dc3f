"""Every public service method with every argument set to hostile values: the calls the
argument sweep makes, and how it tells a typed refusal that wrote nothing from a bug."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import text

from devstream import DevStream
from devstream.db.memory_store import MemoryFilter
from devstream.memory.search import SearchWeights
from devstream.memory.service import NewMemory
from devstream.tasks import PhaseOutline, TaskOutline
from devstream.workflow import Artifact
from tests.integration.conftest import table_names

# Values no argument accepts in this form, some that a few accept, and an id of nothing.
HOSTILE: tuple[object, ...] = (
    None, True, False, 0, -1, 999_999, 2**63, -(2**63) - 1, 2**70, 10**400, 1.5, math.nan,
    math.inf, "", " ", "1", "\x00", "a\x00b", "\ud800", "x" * 10_000, b"bytes", [], [1, "2"],
    {"a": 1}, object(),
)  # fmt: skip


@dataclass(frozen=True)
class World:
    """What the calls act on: a plan with a phase and two tasks, the second depending on the
    first, and one memory."""

    plan: int
    phase: int
    task: int
    later: int
    entry: int


async def build_world(ds: DevStream) -> World:
    plan = await ds.tasks.create_plan("hostile sweep")
    phase = await ds.tasks.add_phase(plan.id, "one")
    first = await ds.tasks.add_task(phase.id, "first")
    later = await ds.tasks.add_task(phase.id, "later", depends_on=[first.id])
    entry = (await ds.memory.store("a memory to act on", "context")).entry
    return World(plan.id, phase.id, first.id, later.id, entry.id)


def calls(w: World) -> dict[str, dict[str, object]]:
    """Each public method and a valid value for each of its arguments. A dotted argument
    is a field of the dataclass passed as the part before the dot."""
    return {
        "tasks.create_plan": {"title": "t", "description": "", "priority": 5},
        "tasks.plans": {"status": None},
        "tasks.set_plan_status": {"plan_id": w.plan, "status": "active"},
        "tasks.update_plan": {"plan_id": w.plan, "title": "t", "priority": 3},
        "tasks.update_phase": {"phase_id": w.phase, "name": "n", "position": 2},
        "tasks.add_phase": {"plan_id": w.plan, "name": "n", "position": None},
        "tasks.progress": {"plan_id": w.plan},
        "tasks.add_task": {
            "phase_id": w.phase,
            "title": "t",
            "description": "",
            "priority": 5,
            "estimated_minutes": 5,
            "depends_on": [w.task],
        },
        "tasks.task": {"task_id": w.task},
        "tasks.tasks": {
            "plan_id": w.plan,
            "phase_id": w.phase,
            "status": "pending",
            "session": None,
        },
        "tasks.release": {"session": "session-1"},
        "tasks.blocked": {"task_ids": [w.task, w.later]},
        "tasks.update_task": {"task_id": w.task, "title": "t", "estimated_minutes": 3},
        "tasks.ready": {"plan_id": w.plan, "limit": 5},
        "tasks.add_dependency": {"task_id": w.later, "depends_on_id": w.task},
        "tasks.remove_dependency": {"task_id": w.later, "depends_on_id": w.task},
        "tasks.dependencies": {"task_id": w.later},
        "tasks.outline": {
            "title": "t",
            "description": "",
            "phases": [PhaseOutline("p", [TaskOutline("a"), TaskOutline("b", depends_on=[1])])],
            "priority": 5,
            "phases.name": "p",
            "phases.tasks": [TaskOutline("a")],
        },
        "tasks.retry": {"task_id": w.task},
        "tasks.skip": {"task_id": w.task},
        "workflow.start_task": {
            "task_id": w.task,
            "budget": 500,
            "per_type_cap": None,
            "session": "s",
        },
        "workflow.start_next": {"plan_id": w.plan, "budget": 500, "session": "s"},
        "workflow.context_for": {"task_id": w.task, "budget": 500, "per_type_cap": None},
        "workflow.complete_task": {
            "task_id": w.task,
            "output": "done",
            "artifacts": [Artifact("code")],
            "artifacts.content": "code",
            "artifacts.content_type": "code",
        },
        "workflow.fail_task": {"task_id": w.task, "error": "it broke"},
        "memory.store": {
            "content": "c",
            "content_type": "context",
            "keywords": ["k"],
            "plan_id": w.plan,
            "phase_id": w.phase,
            "task_id": w.task,
            "embedding": None,
        },
        "memory.store_many": {
            "items": [NewMemory("c", "context")],
            "items.content": "c",
            "items.content_type": "context",
            "items.keywords": None,
            "items.plan_id": None,
            "items.embedding": None,
        },
        "memory.get": {"entry_id": w.entry},
        "memory.entries": {
            "filters": None,
            "limit": 10,
            "offset": 0,
            "filters.content_types": frozenset(),
            "filters.plan_id": None,
            "filters.created_after": None,
            "filters.embedding_status": None,
        },
        "memory.update": {
            "entry_id": w.entry,
            "content": "new",
            "content_type": "code",
            "keywords": None,
        },
        "memory.delete": {"entry_id": w.entry},
        "memory.search": {
            "query": "memory",
            "limit": 10,
            "filters": None,
            "min_similarity": None,
            "weights": None,
            "exact": False,
            "filters.task_id": None,
            "weights.text": 1.0,
            "weights.vector": 1.0,
        },
        "memory.count_retrievals": {"entry_ids": [w.entry]},
        "memory.backfill": {"batch_size": 64},
        "memory.reembed": {"batch_size": 64},
        "memory.waiting": {"other_models": False},
    }


# The dataclass each dotted argument builds, and how a one-item list of it is passed.
_BUILT: dict[str, tuple[Any, bool]] = {
    "filters": (MemoryFilter(), False),
    "weights": (SearchWeights(), False),
    "items": (NewMemory("c", "context"), True),
    "artifacts": (Artifact("code"), True),
    "phases": (PhaseOutline("p"), True),
}


def arguments(valid: dict[str, object], hostile: dict[str, object]) -> dict[str, object]:
    """The keyword arguments of one call: the valid ones with the hostile ones put in."""
    given = {**valid, **hostile}
    plain = {name: value for name, value in given.items() if "." not in name}
    for name, (default, listed) in _BUILT.items():
        fields = {f.split(".", 1)[1]: given[f] for f in hostile if f.startswith(name + ".")}
        if fields:
            built = replace(default, **fields)
            plain[name] = [built] if listed else built
    return plain


def sweep(world: World) -> Iterator[tuple[str, str, object]]:
    """(method, argument, value): every argument of every method with every hostile value."""
    for method, valid in calls(world).items():
        for argument in valid:
            for value in HOSTILE:
                yield method, argument, value


def bound(ds: DevStream, method: str) -> Callable[..., Awaitable[object]]:
    service, name = method.split(".")
    found: Callable[..., Awaitable[object]] = getattr(getattr(ds, service), name)
    return found


async def contents(ds: DevStream) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (the full-text index's own tables included)."""
    async with ds.pool.read_transaction() as conn:
        return {
            name: sorted(map(tuple, await conn.execute(text(f'SELECT * FROM "{name}"'))), key=repr)
            for name in await table_names(conn)
        }
