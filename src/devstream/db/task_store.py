"""Task storage: the statements the task services need beyond plain create/get/update.

Status changes with their event rows, dependency edges, the ready set, progress counts and
the figures `devstream stats` reports - all SQL about plans, phases and tasks lives here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Table,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream.db.records import ContextInjection, MicroTask, Phase
from devstream.db.schema import (
    context_injections,
    intervention_plans,
    micro_tasks,
    phases,
    task_dependencies,
    task_events,
)
from devstream.db.types import utcnow
from devstream.errors import InvalidInput, NotFound
from devstream.vocabulary import DONE, OPEN_PLANS, RUN_ENDS, WORKED_ON

_prerequisite = micro_tasks.alias("prerequisite")
# Edges whose prerequisite is not completed: what keeps a task waiting.
_UNFINISHED = (
    select(task_dependencies.c.task_id, task_dependencies.c.depends_on_id)
    .join(_prerequisite, _prerequisite.c.id == task_dependencies.c.depends_on_id)
    .where(_prerequisite.c.status != "completed")
    .subquery("unfinished")
)


@dataclass(frozen=True)
class Located:
    """A task with the plan it belongs to."""

    task: MicroTask
    plan_id: int
    plan_status: str


async def locate(conn: AsyncConnection, task_id: int, *, lock: bool = False) -> Located | None:
    """The task and its plan; `lock`: its row stays locked until the transaction ends, so of
    concurrent claims one wins and the others see what it did (a no-op on SQLite, whose
    writers take turns)."""
    query = (
        select(
            micro_tasks,
            intervention_plans.c.id.label("plan_id_"),
            intervention_plans.c.status.label("plan_status_"),
        )
        .join(phases, phases.c.id == micro_tasks.c.phase_id)
        .join(intervention_plans, intervention_plans.c.id == phases.c.plan_id)
        .where(micro_tasks.c.id == task_id)
    )
    if lock:
        # NO KEY UPDATE: foreign keys to the row (a dependency added meanwhile) still check.
        query = query.with_for_update(of=micro_tasks, key_share=True)
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    return Located(MicroTask(*row[: len(micro_tasks.c)]), row.plan_id_, row.plan_status_)


@dataclass(frozen=True)
class Places:
    """Where some plans, phases and tasks are, of those that exist."""

    plans: set[int]
    phases: dict[int, int]  # phase -> its plan
    tasks: dict[int, tuple[int, int]]  # task -> (its phase, its plan)

    def check(self, plan_id: int | None, phase_id: int | None, task_id: int | None) -> None:
        """Refuse links to a plan, phase or task that does not exist, or that disagree (a
        task of another phase or plan, a phase of another plan)."""
        if task_id is not None:
            if task_id not in self.tasks:
                raise NotFound("task", task_id)
            task_phase, task_plan = self.tasks[task_id]
            _agree(f"task {task_id}", ("phase", task_phase, phase_id), ("plan", task_plan, plan_id))
        if phase_id is not None:
            if phase_id not in self.phases:
                raise NotFound("phase", phase_id)
            _agree(f"phase {phase_id}", ("plan", self.phases[phase_id], plan_id))
        if plan_id is not None and plan_id not in self.plans:
            raise NotFound("plan", plan_id)


def _agree(what: str, *places: tuple[str, int, int | None]) -> None:
    for kind, actual, given in places:
        if given is not None and given != actual:
            raise InvalidInput(f"{what} is in {kind} {actual}, not {kind} {given}")


async def places(
    conn: AsyncConnection, plan_ids: set[int], phase_ids: set[int], task_ids: set[int]
) -> Places:
    """Where these plans, phases and tasks are, in one round trip."""
    plan, phase, task = intervention_plans.c, phases.c, micro_tasks.c
    none = cast(null(), BigInteger)  # typed: PostgreSQL takes a bare NULL for text
    query = union_all(
        select(literal("plan"), plan.id, none, plan.id).where(plan.id.in_(plan_ids)),
        select(literal("phase"), phase.id, none, phase.plan_id).where(phase.id.in_(phase_ids)),
        select(literal("task"), task.id, task.phase_id, phase.plan_id)
        .join(phases, phase.id == task.phase_id)
        .where(task.id.in_(task_ids)),
    )
    found = Places(set(), {}, {})
    for kind, id_, phase_id, plan_id in await conn.execute(query):
        if kind == "plan":
            found.plans.add(id_)
        elif kind == "phase":
            found.phases[id_] = plan_id
        else:
            found.tasks[id_] = (phase_id, plan_id)
    return found


async def active_in_plan(conn: AsyncConnection, plan_id: int) -> list[int]:
    """The plan's active tasks, by id."""
    query = (
        select(micro_tasks.c.id)
        .join(phases, phases.c.id == micro_tasks.c.phase_id)
        .where(phases.c.plan_id == plan_id, micro_tasks.c.status == "active")
        .order_by(micro_tasks.c.id)
    )
    return list((await conn.scalars(query)).all())


async def open_dependencies(conn: AsyncConnection, task_id: int) -> list[int]:
    """Tasks this one waits on that are not completed yet."""
    u = _UNFINISHED.c
    query = select(u.depends_on_id).where(u.task_id == task_id).order_by(u.depends_on_id)
    return list((await conn.scalars(query)).all())


async def change_status(
    conn: AsyncConnection, task: MicroTask, to: str, **values: Any
) -> MicroTask:
    """Set a task's status (and other columns), record the event, bring its phase along.
    A session's hold on a task lasts while it is active."""
    now = utcnow()
    if to != "active":
        values = {**values, "session_id": None}
    statement = (
        update(micro_tasks)
        .where(micro_tasks.c.id == task.id)
        .values(status=to, updated_at=now, **values)
        .returning(*micro_tasks.c)
    )
    changed = MicroTask(*(await conn.execute(statement)).one())
    await conn.execute(
        insert(task_events).values(task_id=task.id, from_status=task.status, to_status=to, at=now)
    )
    await sync_phase(conn, task.phase_id)
    return changed


async def sync_phase(conn: AsyncConnection, phase_id: int) -> None:
    """A phase is completed when all its tasks are done, active once one has been worked on
    (active, completed or failed), pending before."""
    # The phase's row first, then its tasks in a new statement: of two transactions finishing
    # a phase's last tasks at once, the second waits and then sees the first's.
    await lock_rows(conn, phases, [phase_id])
    tasks = select(micro_tasks.c.id).where(micro_tasks.c.phase_id == phase_id)
    done = exists(tasks) & ~exists(tasks.where(micro_tasks.c.status.not_in(DONE)))
    worked_on = exists(tasks.where(micro_tasks.c.status.in_(WORKED_ON)))
    status = case((done, "completed"), (worked_on, "active"), else_="pending")
    await conn.execute(update(phases).where(phases.c.id == phase_id).values(status=status))


async def lock_rows(conn: AsyncConnection, table: Table, ids: Sequence[int]) -> None:
    """Lock these rows until the transaction ends (PostgreSQL; SQLite's writers take turns)."""
    if conn.dialect.name != "sqlite":
        locked = select(table.c.id).where(table.c.id.in_(ids)).order_by(table.c.id)
        await conn.execute(locked.with_for_update(key_share=True))


async def lock_plan(conn: AsyncConnection, plan_id: int) -> None:
    await lock_rows(conn, intervention_plans, [plan_id])


async def held_plan_status(conn: AsyncConnection, plan_id: int, *, shared: bool) -> str:
    """The plan's status as last committed, its row locked until the transaction ends
    (PostgreSQL): `shared`, against changes only (holders of a shared lock go on side by
    side); else against other lockers too, for a caller that will change the row."""
    status = intervention_plans.c.status
    query = select(status).where(intervention_plans.c.id == plan_id)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update(read=shared, key_share=not shared)
    found: str | None = await conn.scalar(query)
    if found is None:
        raise NotFound("plan", plan_id)
    return found


async def plan_edges(conn: AsyncConnection, plan_id: int) -> list[tuple[int, int]]:
    """Every (task, depends on) edge among the plan's tasks."""
    query = (
        select(task_dependencies.c.task_id, task_dependencies.c.depends_on_id)
        .join(micro_tasks, micro_tasks.c.id == task_dependencies.c.task_id)
        .join(phases, phases.c.id == micro_tasks.c.phase_id)
        .where(phases.c.plan_id == plan_id)
    )
    return [(row[0], row[1]) for row in await conn.execute(query)]


async def ready(conn: AsyncConnection, plan_id: int | None, limit: int | None) -> list[MicroTask]:
    """Pending tasks whose dependencies are all completed: most important first, then in
    phase order and creation order. Only open plans take part."""
    waiting = exists(select(_UNFINISHED.c.task_id).where(_UNFINISHED.c.task_id == micro_tasks.c.id))
    query = (
        select(micro_tasks)
        .join(phases, phases.c.id == micro_tasks.c.phase_id)
        .join(intervention_plans, intervention_plans.c.id == phases.c.plan_id)
        .where(
            micro_tasks.c.status == "pending", ~waiting, intervention_plans.c.status.in_(OPEN_PLANS)
        )
        .order_by(micro_tasks.c.priority.desc(), phases.c.position, micro_tasks.c.id)
        .limit(limit)
    )
    if plan_id is not None:
        query = query.where(phases.c.plan_id == plan_id)
    return [MicroTask(*row) for row in await conn.execute(query)]


async def tasks(
    conn: AsyncConnection,
    *,
    plan_id: int | None = None,
    phase_id: int | None = None,
    status: str | None = None,
    session_id: str | None = None,
) -> list[MicroTask]:
    """Tasks in phase order, then creation order."""
    query = (
        select(micro_tasks)
        .join(phases, phases.c.id == micro_tasks.c.phase_id)
        .order_by(phases.c.plan_id, phases.c.position, micro_tasks.c.id)
    )
    for column, value in (
        (phases.c.plan_id, plan_id),
        (micro_tasks.c.phase_id, phase_id),
        (micro_tasks.c.status, status),
        (micro_tasks.c.session_id, session_id),
    ):
        if value is not None:
            query = query.where(column == value)
    return [MicroTask(*row) for row in await conn.execute(query)]


async def held_by(conn: AsyncConnection, session: str) -> list[MicroTask]:
    """The active tasks a session holds, locked until the transaction ends (PostgreSQL): one
    that another transaction is finishing is waited for, then found no longer active."""
    query = (
        select(micro_tasks)
        .where(micro_tasks.c.status == "active", micro_tasks.c.session_id == session)
        .order_by(micro_tasks.c.id)
    )
    if conn.dialect.name != "sqlite":
        query = query.with_for_update(key_share=True)
    return [MicroTask(*row) for row in await conn.execute(query)]


async def blocked_ids(conn: AsyncConnection, task_ids: Sequence[int]) -> set[int]:
    """Which of these tasks are pending and wait on a dependency that is not completed."""
    query = (
        select(micro_tasks.c.id)
        .join(_UNFINISHED, _UNFINISHED.c.task_id == micro_tasks.c.id)
        .where(micro_tasks.c.id.in_(task_ids), micro_tasks.c.status == "pending")
    )
    return set((await conn.scalars(query)).all())


async def phases_of(conn: AsyncConnection, plan_id: int) -> list[Phase]:
    query = select(phases).where(phases.c.plan_id == plan_id).order_by(phases.c.position)
    return [Phase(*row) for row in await conn.execute(query)]


async def next_position(conn: AsyncConnection, plan_id: int) -> int:
    last = await conn.scalar(select(func.max(phases.c.position)).where(phases.c.plan_id == plan_id))
    return 0 if last is None else int(last) + 1


async def phase_at(conn: AsyncConnection, plan_id: int, position: int) -> int | None:
    """The plan's phase at this position, if one is."""
    at = (phases.c.plan_id == plan_id) & (phases.c.position == position)
    found = await conn.scalar(select(phases.c.id).where(at))
    return None if found is None else int(found)


async def remove_empty_phase(conn: AsyncConnection, phase_id: int) -> bool:
    """Delete the phase if no task is in it; whether it was deleted."""
    holds_tasks = exists().where(micro_tasks.c.phase_id == phase_id)
    result = await conn.execute(delete(phases).where(phases.c.id == phase_id, ~holds_tasks))
    return bool(result.rowcount)


async def record_injection(
    conn: AsyncConnection, task_id: int, memory_ids: Sequence[int], tokens: int
) -> ContextInjection:
    statement = (
        insert(context_injections)
        .values(task_id=task_id, memory_ids=json.dumps(list(memory_ids)), tokens=tokens)
        .returning(*context_injections.c)
    )
    return ContextInjection(*(await conn.execute(statement)).one())


async def injections(conn: AsyncConnection, task_id: int) -> list[ContextInjection]:
    query = (
        select(context_injections)
        .where(context_injections.c.task_id == task_id)
        .order_by(context_injections.c.id)
    )
    return [ContextInjection(*row) for row in await conn.execute(query)]


# --- figures for `devstream stats` ------------------------------------------------------


async def transition_counts(conn: AsyncConnection) -> dict[str, int]:
    """How many times tasks moved between each pair of states, as "from->to"."""
    pair = (task_events.c.from_status, task_events.c.to_status)
    query = select(*pair, func.count()).group_by(*pair).order_by(*pair)
    return {f"{row[0]}->{row[1]}": int(row[2]) for row in await conn.execute(query)}


async def status_counts(conn: AsyncConnection) -> dict[str, dict[str, int]]:
    """Plans and tasks by status."""
    counts: dict[str, dict[str, int]] = {}
    for kind, table in (("plans", intervention_plans), ("tasks", micro_tasks)):
        query = select(table.c.status, func.count()).group_by(table.c.status)
        counts[kind] = {row[0]: int(row[1]) for row in await conn.execute(query)}
    return counts


async def durations(conn: AsyncConnection) -> list[float]:
    """Seconds from start to end (completed, failed or skipped) of every finished task run,
    retried runs included: each start event paired with the end event that follows it."""
    e = task_events.c
    query = select(e.task_id, e.to_status, e.at).order_by(e.task_id, e.id)
    started: dict[int, datetime] = {}
    runs: list[float] = []
    for task_id, to_status, at in await conn.execute(query):
        if to_status == "active":
            started[task_id] = at
        elif to_status in RUN_ENDS and task_id in started:
            runs.append((at - started.pop(task_id)).total_seconds())
    return runs


async def injection_totals(conn: AsyncConnection) -> tuple[int, int]:
    """(context injections recorded, tokens injected in all)."""
    query = select(func.count(), func.coalesce(func.sum(context_injections.c.tokens), 0))
    count, tokens = (await conn.execute(query)).one()
    return int(count), int(tokens)
