"""Plans, phases and micro-tasks: creating them, moving them through their states, ordering
the work by dependencies, and reporting progress.

Every status change is checked against the flow (tasks/states.py) inside the write
transaction that makes it, so concurrent callers cannot both win; each is recorded as a
task event. "Blocked" is never stored: it is a pending task with an unfinished dependency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream.db import task_store as store
from devstream.db.queries import QueryManager
from devstream.db.records import Dependency, MicroTask, Phase, Plan
from devstream.db.schema import MAX_TASK_MINUTES
from devstream.db.types import utcnow
from devstream.errors import DependencyCycle, InvalidInput, NotFound
from devstream.metrics import MetricsRegistry
from devstream.tasks.graph import cycle_through
from devstream.tasks.states import PLAN_FLOW, TASK_FLOW, Flow, check

Writer = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
Check = Callable[[Any], None]  # raises InvalidInput

# Plans whose tasks may still be worked on.
OPEN_PLANS = ("draft", "active")


@dataclass(frozen=True)
class PhaseProgress:
    phase: Phase
    counts: dict[str, int]  # tasks by status, "blocked" apart from the other pending ones
    total: int

    @property
    def done(self) -> int:
        return self.counts.get("completed", 0) + self.counts.get("skipped", 0)

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.done == self.total

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0


@dataclass(frozen=True)
class PlanProgress:
    plan: Plan
    phases: list[PhaseProgress]

    @property
    def total(self) -> int:
        return sum(phase.total for phase in self.phases)

    @property
    def done(self) -> int:
        return sum(phase.done for phase in self.phases)

    @property
    def complete(self) -> bool:
        return bool(self.phases) and all(phase.complete for phase in self.phases)

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0


class TaskService:
    def __init__(self, queries: QueryManager, metrics: MetricsRegistry, write: Writer) -> None:
        self._queries = queries
        self._pool = queries.pool
        self.metrics = metrics
        self._write = write

    # --- plans and phases ------------------------------------------------------------

    async def create_plan(self, title: str, description: str = "", *, priority: int = 5) -> Plan:
        _check_title(title, "plan title")
        _check_priority(priority)
        return await self._queries.plans.create(
            title=title.strip(), description=description, priority=priority
        )

    async def plans(self, *, status: str | None = None) -> list[Plan]:
        if status is None:
            return await self._queries.plans.list()
        _check_known(status, PLAN_FLOW, "plan status")
        return await self._queries.plans.list(status=status)

    async def set_plan_status(self, plan_id: int, status: str) -> Plan:
        """Move a plan along draft -> active -> completed | archived | cancelled; a plan is
        completed only when every phase is."""
        _check_known(status, PLAN_FLOW, "plan status")
        async with self._write() as conn:
            plan = await _plan(conn, plan_id)
            check(PLAN_FLOW, "plan", plan_id, plan.status, status)
            if status == "completed":
                progress = _progress(plan, *await self._plan_state(conn, plan_id))
                if not progress.complete:
                    raise InvalidInput(
                        f"plan {plan_id} has {progress.total - progress.done} unfinished task(s)",
                        hint="complete or skip them first, or cancel the plan",
                    )
            return await store.set_plan_status(conn, plan_id, status)

    async def update_plan(self, plan_id: int, **values: Any) -> Plan:
        """Change title, description or priority (status moves by `set_plan_status`)."""
        checks = {
            "title": _check_title_of("plan"),
            "description": _check_text,
            "priority": _check_priority,
        }
        return Plan(*await self._edit("plan", store.p, plan_id, values, checks))

    async def update_phase(self, phase_id: int, **values: Any) -> Phase:
        """Rename a phase or move it to another position in its plan."""
        checks = {"name": _check_title_of("phase"), "position": _check_position}
        return Phase(*await self._edit("phase", store.ph, phase_id, values, checks))

    async def _edit(
        self, kind: str, table: Table, key: int, values: dict[str, Any], checks: dict[str, Check]
    ) -> tuple[Any, ...]:
        unknown = set(values) - set(checks)
        if unknown or not values:
            raise InvalidInput(
                f"cannot update {', '.join(sorted(unknown)) or 'nothing'} of a {kind}; "
                f"editable: {', '.join(checks)}"
            )
        for name, value in values.items():
            checks[name](value)
        async with self._write() as conn:
            row = await store.update_row(conn, table, key, values)
        if row is None:
            raise NotFound(kind, key)
        return row

    async def add_phase(self, plan_id: int, name: str, *, position: int | None = None) -> Phase:
        """A phase at `position`, or after the plan's last one."""
        _check_title(name, "phase name")
        async with self._write() as conn:
            _check_open(await _plan(conn, plan_id))
            if position is None:
                position = await store.next_position(conn, plan_id)
            return await store.add_phase(conn, plan_id, name.strip(), position)

    async def progress(self, plan_id: int) -> PlanProgress:
        plan = await self._queries.plans.get(plan_id)
        async with self._pool.read_transaction() as conn:
            return _progress(plan, *await self._plan_state(conn, plan_id))

    async def _plan_state(
        self, conn: AsyncConnection, plan_id: int
    ) -> tuple[list[Phase], list[MicroTask], set[int]]:
        phases = await store.phases_of(conn, plan_id)
        tasks = await store.tasks(conn, plan_id=plan_id)
        pending = [task.id for task in tasks if task.status == "pending"]
        return phases, tasks, await store.blocked_ids(conn, pending)

    # --- tasks -----------------------------------------------------------------------

    async def add_task(
        self,
        phase_id: int,
        title: str,
        description: str = "",
        *,
        priority: int = 5,
        estimated_minutes: int = 5,
        depends_on: Sequence[int] = (),
    ) -> MicroTask:
        """A pending micro-task; its dependencies are added with it, all or none."""
        _check_title(title, "task title")
        _check_priority(priority)
        _check_estimate(estimated_minutes)
        async with self._write() as conn:
            phase = await store.phase(conn, phase_id)
            if phase is None:
                raise NotFound("phase", phase_id)
            _check_open(await _plan(conn, phase.plan_id))
            task = await store.add_task(
                conn,
                phase_id=phase_id,
                title=title.strip(),
                description=description,
                priority=priority,
                estimated_minutes=estimated_minutes,
            )
            for prerequisite in depends_on:
                await self._depend(conn, task.id, prerequisite)
        return task

    async def task(self, task_id: int) -> MicroTask:
        return await self._queries.tasks.get(task_id)

    async def tasks(
        self, *, plan_id: int | None = None, phase_id: int | None = None, status: str | None = None
    ) -> list[MicroTask]:
        if status is not None:
            _check_known(status, TASK_FLOW, "task status")
        async with self._pool.read_transaction() as conn:
            return await store.tasks(conn, plan_id=plan_id, phase_id=phase_id, status=status)

    async def blocked(self, task_ids: Sequence[int]) -> set[int]:
        """Which of these tasks are pending behind an unfinished dependency."""
        async with self._pool.read_transaction() as conn:
            return await store.blocked_ids(conn, task_ids)

    async def update_task(self, task_id: int, **values: Any) -> MicroTask:
        """Change title, description, priority or estimate (status moves by transitions)."""
        checks = {
            "title": _check_title_of("task"),
            "description": _check_text,
            "priority": _check_priority,
            "estimated_minutes": _check_estimate,
        }
        return MicroTask(*await self._edit("task", store.t, task_id, values, checks))

    async def ready(
        self, *, plan_id: int | None = None, limit: int | None = None
    ) -> list[MicroTask]:
        """Pending tasks with every dependency completed, most important first."""
        async with self._pool.read_transaction() as conn:
            return await store.ready(conn, plan_id, limit)

    # --- dependencies ----------------------------------------------------------------

    async def add_dependency(self, task_id: int, depends_on_id: int) -> Dependency:
        """`task_id` waits for `depends_on_id`; refused across plans and when it would close
        a cycle (the error names it)."""
        async with self._write() as conn:
            return await self._depend(conn, task_id, depends_on_id)

    async def dependencies(self, task_id: int) -> list[Dependency]:
        return await self._queries.dependencies.list(task_id=task_id)

    async def _depend(self, conn: AsyncConnection, task_id: int, depends_on_id: int) -> Dependency:
        task, prerequisite = (
            await self._locate(conn, task_id),
            await self._locate(conn, depends_on_id),
        )
        if task.plan_id != prerequisite.plan_id:
            raise InvalidInput(
                f"task {task_id} (plan {task.plan_id}) cannot depend on task {depends_on_id} "
                f"of another plan ({prerequisite.plan_id})"
            )
        cycle = cycle_through(await store.plan_edges(conn, task.plan_id), task_id, depends_on_id)
        if cycle is not None:
            raise DependencyCycle(cycle)
        return await store.add_dependency(conn, task_id, depends_on_id)

    # --- transitions -----------------------------------------------------------------

    async def retry(self, task_id: int) -> MicroTask:
        """A failed task back to pending, its retry count raised."""
        async with self._write() as conn:
            located = await self.claim(conn, task_id, "pending")
            return await self.move(
                conn, located, "pending", retry_count=located.task.retry_count + 1
            )

    async def skip(self, task_id: int) -> MicroTask:
        async with self._write() as conn:
            located = await self.claim(conn, task_id, "skipped")
            return await self.move(conn, located, "skipped", **finished(located.task))

    async def claim(self, conn: AsyncConnection, task_id: int, to: str) -> store.Located:
        """Inside a write transaction: the task, checked that it may move to `to` now."""
        located = await self._locate(conn, task_id)
        check(TASK_FLOW, "task", task_id, located.task.status, to)
        _check_open_status(located.plan_id, located.plan_status)
        return located

    async def move(
        self, conn: AsyncConnection, located: store.Located, to: str, **values: Any
    ) -> MicroTask:
        """Inside the claiming transaction: make the change, count it, activate the plan."""
        if to == "active" and located.plan_status == "draft":
            await store.set_plan_status(conn, located.plan_id, "active")
        changed = await store.change_status(conn, located.task, to, **values)
        self.metrics.increment(f"task.transitions.{located.task.status}->{to}")
        return changed

    async def _locate(self, conn: AsyncConnection, task_id: int) -> store.Located:
        located = await store.locate(conn, task_id)
        if located is None:
            raise NotFound("task", task_id)
        return located


async def _plan(conn: AsyncConnection, plan_id: int) -> Plan:
    plan = await store.plan(conn, plan_id)
    if plan is None:
        raise NotFound("plan", plan_id)
    return plan


def finished(task: MicroTask) -> dict[str, datetime | float | None]:
    """Completion time and, for a task that was started, how long it ran."""
    now = utcnow()
    duration = None if task.started_at is None else (now - task.started_at).total_seconds()
    return {"completed_at": now, "duration_s": duration}


def _progress(
    plan: Plan, phases: list[Phase], tasks: list[MicroTask], blocked: set[int]
) -> PlanProgress:
    by_phase: dict[int, dict[str, int]] = {phase.id: {} for phase in phases}
    for task in tasks:
        state = "blocked" if task.id in blocked else task.status
        counts = by_phase[task.phase_id]
        counts[state] = counts.get(state, 0) + 1
    return PlanProgress(
        plan,
        [
            PhaseProgress(phase, by_phase[phase.id], sum(by_phase[phase.id].values()))
            for phase in phases
        ],
    )


def _check_title_of(kind: str) -> Check:
    name = "name" if kind == "phase" else "title"
    return lambda value: _check_title(value, f"{kind} {name}")


def _check_text(value: object) -> None:
    if not isinstance(value, str):
        raise InvalidInput(f"a description is text, got {type(value).__name__}")


def _check_position(value: object) -> None:
    if not isinstance(value, int) or value < 0:
        raise InvalidInput(f"a phase position is a whole number from 0, got {value!r}")


def _check_title(title: object, what: str) -> None:
    if not isinstance(title, str) or not title.strip():
        raise InvalidInput(f"{what} is empty")
    if len(title) > 200:
        raise InvalidInput(f"{what} has {len(title)} characters; the maximum is 200")


def _check_priority(priority: object) -> None:
    if not isinstance(priority, int) or not 1 <= priority <= 10:
        raise InvalidInput(f"priority must be a whole number from 1 to 10, got {priority!r}")


def _check_estimate(minutes: object) -> None:
    if not isinstance(minutes, int) or minutes < 1:
        raise InvalidInput(
            f"estimate must be a whole number of minutes, at least 1; got {minutes!r}"
        )
    if minutes > MAX_TASK_MINUTES:
        raise InvalidInput(
            f"a micro-task takes at most {MAX_TASK_MINUTES} minutes; {minutes} is too long",
            hint="split it into smaller tasks",
        )


def _check_known(status: str, flow: Flow, what: str) -> None:
    if status not in flow:
        raise InvalidInput(f"unknown {what} {status!r}; use one of {', '.join(flow)}")


def _check_open(plan: Plan) -> None:
    _check_open_status(plan.id, plan.status)


def _check_open_status(plan_id: int, status: str) -> None:
    if status not in OPEN_PLANS:
        raise InvalidInput(f"plan {plan_id} is {status}; its work can no longer change")
