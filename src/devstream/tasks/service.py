"""Plans, phases and micro-tasks: creating them, moving them through their states, ordering
the work by dependencies, and reporting progress.

Every status change is checked against the flow (tasks/states.py) inside the write
transaction that makes it, so concurrent callers cannot both win; each is recorded as a
task event. "Blocked" is never stored: it is a pending task with an unfinished dependency.
All writes go through `write`, the pool's write transaction (which replaces the
store-generation token).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from devstream import checks
from devstream.db import task_store
from devstream.db.queries import QueryManager, RecordT, Repository
from devstream.db.records import Dependency, MicroTask, Phase, Plan
from devstream.db.types import utcnow
from devstream.errors import DependencyCycle, InvalidInput, NotFound
from devstream.metrics import MetricsRegistry
from devstream.tasks.graph import cycle_through
from devstream.tasks.outline import Outlined, PhaseOutline, checked, tasks_of
from devstream.tasks.progress import PlanProgress, progress_of
from devstream.tasks.states import PLAN_FLOW, TASK_FLOW, check
from devstream.vocabulary import OPEN_PLANS

Guard = Callable[[AsyncConnection], Awaitable[object]]  # raises when an edit is not allowed


def check_new_plan(title: object, description: object, priority: object) -> None:
    """Refuse a new plan's bad input with a typed error: callable before any store is opened."""
    checks.title_of("plan")(title)
    checks.description(description)
    checks.priority(priority)


class TaskService:
    def __init__(self, queries: QueryManager, metrics: MetricsRegistry) -> None:
        self._queries = queries
        self._pool = queries.pool
        self.metrics = metrics

    # --- plans and phases ------------------------------------------------------------

    async def create_plan(self, title: str, description: str = "", *, priority: int = 5) -> Plan:
        check_new_plan(title, description, priority)
        async with self._pool.write_transaction() as conn:
            values = {"title": title.strip(), "description": description, "priority": priority}
            return await self._queries.plans.insert_in(conn, values)

    async def plans(self, *, status: str | None = None) -> list[Plan]:
        if status is None:
            return await self._queries.plans.list()
        checks.one_of(status, "plan status", tuple(PLAN_FLOW))
        return await self._queries.plans.list(status=status)

    async def set_plan_status(self, plan_id: int, status: str) -> Plan:
        """Move a plan along draft -> active -> completed | archived | cancelled; a plan is
        completed only when every phase is, and closed only when no task of it is active
        (a closed plan's tasks cannot move: an active one would stay active for good)."""
        checks.identifier(plan_id, "plan_id")
        checks.one_of(status, "plan status", tuple(PLAN_FLOW))
        async with self._pool.write_transaction() as conn:
            # Locked first: what follows reads the plan, and its active tasks, as they are
            # once no start or other change of it is in flight (see `claim`).
            await task_store.lock_plan(conn, plan_id)
            plan = await self._plan(conn, plan_id)
            check(PLAN_FLOW, "plan", plan_id, plan.status, status)
            if status not in OPEN_PLANS:
                await _check_none_active(conn, plan_id, status)
            if status == "completed":
                problem = (await _progress(conn, plan)).why_incomplete()
                if problem is not None:
                    message, hint = problem
                    raise InvalidInput(message, hint=hint)
            return await self._set_plan_status(conn, plan_id, status)

    async def update_plan(self, plan_id: int, **values: Any) -> Plan:
        """Change title, description or priority (status moves by `set_plan_status`)."""
        rules = {
            "title": checks.title_of("plan"),
            "description": checks.description,
            "priority": checks.priority,
        }
        return await self._edit(self._queries.plans, plan_id, values, rules)

    async def update_phase(self, phase_id: int, **values: Any) -> Phase:
        """Rename a phase or move it to another position in its plan (of an open plan)."""
        rules = {"name": checks.title_of("phase"), "position": checks.position}

        async def guard(conn: AsyncConnection) -> None:
            # A move takes the plan's lock for positions: held that way from the start.
            plan_id = await self._open_phase(conn, phase_id, shared="position" not in values)
            if "position" in values:
                await _check_position_free(conn, plan_id, values["position"], phase_id)

        return await self._edit(self._queries.phases, phase_id, values, rules, guard=guard)

    async def _edit(
        self,
        repository: Repository[RecordT],
        key: int,
        values: dict[str, Any],
        rules: dict[str, checks.Check],
        *,
        guard: Guard | None = None,
    ) -> RecordT:
        """Check and set fields of one row; names and titles are stored stripped."""
        checks.identifier(key, f"{repository.kind}_id")
        unknown = set(values) - set(rules)
        if unknown or not values:
            raise InvalidInput(
                f"cannot update {', '.join(sorted(unknown)) or 'nothing'} of a "
                f"{repository.kind}; "
                f"editable: {', '.join(rules)}"
            )
        for name, value in values.items():
            rules[name](value)
        values = {k: v.strip() if k in ("title", "name") else v for k, v in values.items()}
        async with self._pool.write_transaction() as conn:
            if guard is not None:
                await guard(conn)
            updated = await repository.update_in(conn, key, values)
            if updated is None:  # raised inside: the refusal rolls back
                raise NotFound(repository.kind, key)
        return updated

    async def add_phase(self, plan_id: int, name: str, *, position: int | None = None) -> Phase:
        """A phase at `position`, or after the plan's last one."""
        checks.identifier(plan_id, "plan_id")
        checks.title_of("phase")(name)
        if position is not None:
            checks.position(position)
        async with self._pool.write_transaction() as conn:
            await _hold_open_plan(conn, plan_id, shared=False)  # two adds take turns for "last"
            if position is None:
                position = await _next_position(conn, plan_id)
            else:
                await _check_position_free(conn, plan_id, position, None)
            values = {"plan_id": plan_id, "name": name.strip(), "position": position}
            return await self._queries.phases.insert_in(conn, values)

    async def remove_phase(self, phase_id: int) -> None:
        """Remove a phase without tasks from an open plan: one planned and then not needed,
        which would keep the plan from being completed."""
        checks.identifier(phase_id, "phase_id")
        async with self._pool.write_transaction() as conn:
            await self._open_phase(conn, phase_id, shared=False)  # no task is added meanwhile
            if not await task_store.remove_empty_phase(conn, phase_id):
                raise InvalidInput(
                    f"phase {phase_id} has tasks; only a phase without tasks can be removed",
                    hint="complete or skip its tasks instead",
                )

    async def outline(
        self,
        title: str,
        description: str = "",
        phases: Sequence[PhaseOutline] = (),
        *,
        priority: int = 5,
    ) -> Outlined:
        """A draft plan with its phases, their tasks and the dependencies between them
        (`devstream.tasks.outline`), created together or not at all."""
        checks.title_of("plan")(title)
        checks.description(description)
        checks.priority(priority)
        outlined = checked(phases)
        async with self._pool.write_transaction() as conn:
            values = {"title": title.strip(), "description": description, "priority": priority}
            plan = await self._queries.plans.insert_in(conn, values)
            made_phases, made_tasks = [], []
            for position, phase in enumerate(outlined):
                values = {"plan_id": plan.id, "name": phase.name.strip(), "position": position}
                made_phases.append(await self._queries.phases.insert_in(conn, values))
                for task in phase.tasks:
                    fields = (task.title, task.description, task.priority, task.estimated_minutes)
                    values = _task_values(made_phases[-1].id, *fields)
                    made_tasks.append(await self._queries.tasks.insert_in(conn, values))
            for task, made in zip(tasks_of(outlined), made_tasks, strict=True):
                for other in dict.fromkeys(task.depends_on):
                    await self._depend(conn, made.id, made_tasks[other - 1].id)
        return Outlined(plan, made_phases, made_tasks)

    async def progress(self, plan_id: int) -> PlanProgress:
        """The plan, its phases' progress and its tasks, from one snapshot."""
        checks.identifier(plan_id, "plan_id")
        async with self._pool.read_transaction() as conn:
            return await _progress(conn, await self._plan(conn, plan_id))

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
        checks.identifier(phase_id, "phase_id")
        checks.title_of("task")(title)
        checks.description(description)
        checks.priority(priority)
        checks.estimate(estimated_minutes)
        prerequisites = checks.identifiers(depends_on, "depends_on")
        async with self._pool.write_transaction() as conn:
            # Held alone, or with the lock a dependency change takes (not one, then the other).
            await self._open_phase(conn, phase_id, shared=not prerequisites)
            values = _task_values(phase_id, title, description, priority, estimated_minutes)
            task = await self._queries.tasks.insert_in(conn, values)
            for prerequisite in dict.fromkeys(prerequisites):  # each once, in the order given
                # A refusal rolls the task back: it is "the new task", not an id it never had.
                await self._depend(conn, task.id, prerequisite, named="the new task")
            await task_store.sync_phase(conn, phase_id)  # a done phase has work again
        return task

    async def task(self, task_id: int) -> MicroTask:
        checks.identifier(task_id, "task_id")
        return await self._queries.tasks.get(task_id)

    async def tasks(
        self,
        *,
        plan_id: int | None = None,
        phase_id: int | None = None,
        status: str | None = None,
        session: str | None = None,
    ) -> list[MicroTask]:
        """Tasks in phase order; `session`: those an assistant session holds."""
        checks.optional_identifier(plan_id, "plan_id")
        checks.optional_identifier(phase_id, "phase_id")
        if status is not None:
            checks.one_of(status, "task status", tuple(TASK_FLOW))
        if session is not None:
            checks.session(session)
        async with self._pool.read_transaction() as conn:
            return await task_store.tasks(
                conn, plan_id=plan_id, phase_id=phase_id, status=status, session_id=session
            )

    async def blocked(self, task_ids: Sequence[int]) -> set[int]:
        """Which of these tasks are pending behind an unfinished dependency."""
        ids = checks.identifiers(task_ids, "task_ids")
        async with self._pool.read_transaction() as conn:
            return await task_store.blocked_ids(conn, ids)

    async def update_task(self, task_id: int, **values: Any) -> MicroTask:
        """Change title, description, priority or estimate of a task of an open plan (status
        moves by transitions)."""
        rules = {
            "title": checks.title_of("task"),
            "description": checks.description,
            "priority": checks.priority,
            "estimated_minutes": checks.estimate,
        }

        async def guard(conn: AsyncConnection) -> None:
            located = await self.locate(conn, task_id)
            checks.plan_open(located.plan_id, located.plan_status)

        return await self._edit(self._queries.tasks, task_id, values, rules, guard=guard)

    async def ready(
        self, *, plan_id: int | None = None, limit: int | None = None
    ) -> list[MicroTask]:
        """Pending tasks with every dependency completed, most important first."""
        checks.optional_identifier(plan_id, "plan_id")
        checks.limit(limit)
        async with self._pool.read_transaction() as conn:
            return await task_store.ready(conn, plan_id, limit)

    # --- dependencies ----------------------------------------------------------------

    async def add_dependency(self, task_id: int, depends_on_id: int) -> Dependency:
        """`task_id` (pending, of an open plan) waits for `depends_on_id`; refused across
        plans and when it would close a cycle (the error names it). Adding one that is
        already there changes nothing and returns it."""
        checks.identifier(task_id, "task_id")
        checks.identifier(depends_on_id, "depends_on_id")
        async with self._pool.write_transaction() as conn:
            return await self._depend(conn, task_id, depends_on_id)

    async def remove_dependency(self, task_id: int, depends_on_id: int) -> None:
        """`task_id` no longer waits for `depends_on_id` (a pending task of an open plan)."""
        checks.identifier(task_id, "task_id")
        checks.identifier(depends_on_id, "depends_on_id")
        async with self._pool.write_transaction() as conn:
            task = await self.locate(conn, task_id)
            _check_dependencies_changeable(task)
            await _hold_open_plan(conn, task.plan_id, shared=False)
            if not await self._queries.dependencies.delete_in(conn, task_id, depends_on_id):
                raise NotFound("dependency", (task_id, depends_on_id))

    async def dependencies(self, task_id: int) -> list[Dependency]:
        checks.identifier(task_id, "task_id")
        return await self._queries.dependencies.list(task_id=task_id)

    async def _depend(
        self, conn: AsyncConnection, task_id: int, depends_on_id: int, *, named: str = ""
    ) -> Dependency:
        task, prerequisite = (
            await self.locate(conn, task_id),
            await self.locate(conn, depends_on_id),
        )
        _check_dependencies_changeable(task)
        _check_same_plan(named or f"task {task_id}", task.plan_id, prerequisite)
        # One dependency change per plan at a time (a removal too): two that each close half
        # a cycle must not both pass the check, and the edges read stay as read.
        await _hold_open_plan(conn, task.plan_id, shared=False)
        edges = await task_store.plan_edges(conn, task.plan_id)
        dependencies = self._queries.dependencies
        if (task_id, depends_on_id) in edges:
            existing = await dependencies.get_in(conn, task_id, depends_on_id)
            assert existing is not None, "the plan's lock keeps its edges as read"
            return existing
        cycle = cycle_through(edges, task_id, depends_on_id)
        if cycle is not None:
            raise DependencyCycle(cycle)
        return await dependencies.insert_in(conn, task_id, depends_on_id)

    # --- transitions -----------------------------------------------------------------

    async def retry(self, task_id: int) -> MicroTask:
        """A failed task back to pending, its retry count raised and its last run cleared
        (the task events keep every run)."""
        checks.identifier(task_id, "task_id")
        async with self._pool.write_transaction() as conn:
            located = await self.claim(conn, task_id, "pending")
            retried = await self.move(
                conn,
                located,
                "pending",
                retry_count=located.task.retry_count + 1,
                started_at=None,
                completed_at=None,
                duration_s=None,
            )
        self.count(located, "pending")
        return retried

    async def skip(self, task_id: int) -> MicroTask:
        checks.identifier(task_id, "task_id")
        async with self._pool.write_transaction() as conn:
            located = await self.claim(conn, task_id, "skipped")
            skipped = await self.move(conn, located, "skipped", **finished(located.task))
        self.count(located, "skipped")
        return skipped

    async def release(self, session: str) -> list[MicroTask]:
        """The active tasks an ended assistant session still holds, back to pending (their
        start forgotten, the task events keeping it), for other sessions to take."""
        checks.session(session)
        released = []
        async with self._pool.write_transaction() as conn:
            for task in await task_store.held_by(conn, session):
                released.append(
                    await task_store.change_status(conn, task, "pending", started_at=None)
                )
        for _ in released:
            self.metrics.increment("task.transitions.active->pending")
        return released

    async def claim(
        self, conn: AsyncConnection, task_id: int, to: str, *, lock: bool = True
    ) -> task_store.Located:
        """Inside a transaction: the task, checked that it may move to `to` now, and locked:
        of concurrent claims one wins (without `lock`, only a look ahead, which a read
        transaction may take; the move claims it again).

        A start also holds its plan's row until it commits, so that a plan closing at the
        same moment either waits for it (and then finds the task active) or closes first
        (and the start finds the plan closed): a closed plan keeps no active task. Starts
        share the hold, except the first of a draft plan, which activates it (`move`)."""
        located = await self.locate(conn, task_id, lock=lock)
        check(TASK_FLOW, "task", task_id, located.task.status, to)
        if lock and to == "active":
            shared = located.plan_status != "draft"
            status = await task_store.held_plan_status(conn, located.plan_id, shared=shared)
            located = replace(located, plan_status=status)
        checks.plan_open(located.plan_id, located.plan_status)
        return located

    async def move(
        self, conn: AsyncConnection, located: task_store.Located, to: str, **values: Any
    ) -> MicroTask:
        """Inside the claiming transaction: make the change; starting activates the plan."""
        if to == "active" and located.plan_status == "draft":
            await self._set_plan_status(conn, located.plan_id, "active")
        return await task_store.change_status(conn, located.task, to, **values)

    def count(self, located: task_store.Located, to: str) -> None:
        """Count a transition, once its transaction has committed."""
        self.metrics.increment(f"task.transitions.{located.task.status}->{to}")

    async def _open_phase(
        self, conn: AsyncConnection, phase_id: int, *, shared: bool = True
    ) -> int:
        """The phase's plan, held open (see `_hold_open_plan`)."""
        phase = await self._queries.phases.get_in(conn, phase_id)
        if phase is None:
            raise NotFound("phase", phase_id)
        await _hold_open_plan(conn, phase.plan_id, shared=shared)
        return phase.plan_id

    async def locate(
        self, conn: AsyncConnection, task_id: int, *, lock: bool = False
    ) -> task_store.Located:
        """Inside a transaction: the task with its phase's plan (`lock`: see task_store)."""
        located = await task_store.locate(conn, task_id, lock=lock)
        if located is None:
            raise NotFound("task", task_id)
        return located

    async def _plan(self, conn: AsyncConnection, plan_id: int) -> Plan:
        plan = await self._queries.plans.get_in(conn, plan_id)
        if plan is None:
            raise NotFound("plan", plan_id)
        return plan

    async def _set_plan_status(self, conn: AsyncConnection, plan_id: int, status: str) -> Plan:
        plan = await self._queries.plans.update_in(conn, plan_id, {"status": status})
        assert plan is not None  # the caller has just read it in this transaction
        return plan


def _check_same_plan(what: str, plan_id: int, prerequisite: task_store.Located) -> None:
    """Refuse a dependency on a task of another plan."""
    if prerequisite.plan_id != plan_id:
        raise InvalidInput(
            f"{what} (plan {plan_id}) cannot depend on task {prerequisite.task.id} "
            f"of another plan ({prerequisite.plan_id})"
        )


async def _check_none_active(conn: AsyncConnection, plan_id: int, status: str) -> None:
    active = await task_store.active_in_plan(conn, plan_id)
    if active:
        raise InvalidInput(
            f"plan {plan_id} cannot be {status} while task {active[0]} is active",
            hint="complete, fail or skip it first, or release its session's tasks",
        )


async def _hold_open_plan(conn: AsyncConnection, plan_id: int, *, shared: bool) -> None:
    """Hold the plan's row until the transaction ends, and check the plan open as it then
    stands: a close in flight is waited for, so no change lands in a plan that closed
    meanwhile (`shared`: beside other holders that do not change the plan row)."""
    status = await task_store.held_plan_status(conn, plan_id, shared=shared)
    checks.plan_open(plan_id, status)


async def _next_position(conn: AsyncConnection, plan_id: int) -> int:
    """The position after the plan's last phase."""
    position = await task_store.next_position(conn, plan_id)
    if position > checks.MAX_INT:
        raise InvalidInput(
            f"plan {plan_id} has a phase at the last position, {checks.MAX_INT}",
            hint="give the new phase a free --position, or move that phase down",
        )
    return position


async def _check_position_free(
    conn: AsyncConnection, plan_id: int, position: int, moving: int | None
) -> None:
    """Refuse a position another phase of the plan holds (a phase moved may keep its own).
    The caller holds the plan's row alone (`_hold_open_plan`): of two writers placing a
    phase there at once, the second sees the first's."""
    taken = await task_store.phase_at(conn, plan_id, position)
    if taken is not None and taken != moving:
        raise InvalidInput(
            f"plan {plan_id} has a phase at position {position} already (phase {taken})",
            hint="pick a free position, or leave it out to add the phase after the last one",
        )


def _task_values(
    phase_id: int, title: str, description: str, priority: int, estimated_minutes: int
) -> dict[str, Any]:
    return {
        "phase_id": phase_id,
        "title": title.strip(),
        "description": description,
        "priority": priority,
        "estimated_minutes": estimated_minutes,
    }


def _check_dependencies_changeable(task: task_store.Located) -> None:
    if task.task.status != "pending":
        raise InvalidInput(
            f"task {task.task.id} is {task.task.status}; only a pending task's "
            "dependencies can change"
        )
    checks.plan_open(task.plan_id, task.plan_status)


def finished(task: MicroTask) -> dict[str, datetime | float | None]:
    """Completion time and, for a task that was started, how long it ran."""
    now = utcnow()
    duration = None if task.started_at is None else (now - task.started_at).total_seconds()
    return {"completed_at": now, "duration_s": duration}


async def _progress(conn: AsyncConnection, plan: Plan) -> PlanProgress:
    phases = await task_store.phases_of(conn, plan.id)
    tasks = await task_store.tasks(conn, plan_id=plan.id)
    blocked = await task_store.blocked_ids(conn, [task.id for task in tasks])
    return progress_of(plan, phases, tasks, blocked)
