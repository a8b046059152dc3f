"""The memory-aware workflow: start a task with context from memory, capture what it produced.

It composes the task and memory services, which know nothing of each other.

- `start_task`: the context is assembled first (reads only), then one transaction claims the
  task, records the injection and counts the memories' retrievals - a caller that loses a
  race to claim the task leaves no trace.
- `start_next`: the most important ready task that this caller wins: of several callers
  asking at once, each gets a different task or none.
- `complete_task` / `fail_task`: the transition and the memories it produces commit in one
  transaction; embedding happens before it, and when the embedder is down the memories are
  stored as pending and the task still completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from devstream import checks
from devstream.db import task_store
from devstream.db.pool import ConnectionPool
from devstream.db.records import ContextInjection, MicroTask
from devstream.db.types import utcnow
from devstream.errors import IllegalTransition, InvalidInput, TaskBlocked
from devstream.memory.context import AssembledContext, TokenCounter, approximate_tokens, assemble
from devstream.memory.service import MemoryService, NewMemory, StoreResult
from devstream.metrics import MetricsRegistry
from devstream.tasks.service import TaskService, finished
from devstream.vocabulary import CONTEXT_BUDGET

# Ready tasks read at a time by `start_next`: more than the callers likely to race for them.
_CLAIM_BATCH = 8


@dataclass(frozen=True)
class Artifact:
    """Something a task produced besides its output: code (the default), a decision, ..."""

    content: str
    content_type: str = "code"


@dataclass(frozen=True)
class StartedTask:
    task: MicroTask
    context: AssembledContext
    injection: ContextInjection


@dataclass(frozen=True)
class FinishedTask:
    task: MicroTask
    memories: list[StoreResult] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Why captured memories wait to be embedded, if they do."""
        return sorted({m.warning for m in self.memories if m.warning is not None})


class Workflow:
    def __init__(
        self,
        tasks: TaskService,
        memory: MemoryService,
        pool: ConnectionPool,
        metrics: MetricsRegistry,
    ) -> None:
        self.tasks = tasks
        self.memory = memory
        self._pool = pool
        self.metrics = metrics

    async def start_task(
        self,
        task_id: int,
        *,
        budget: int = CONTEXT_BUDGET,
        per_type_cap: int | None = None,
        count_tokens: TokenCounter = approximate_tokens,
        session: str | None = None,
    ) -> StartedTask:
        """Claim a ready task and inject the memories most relevant to it; `session`: the
        assistant session that holds it while it is active."""
        checks.identifier(task_id, "task_id")
        _check_budget(budget, per_type_cap)
        if session is not None:
            checks.session(session)
        with self.metrics.timed("workflow.start"):
            located = await self._claimable(task_id, "active")  # before the costlier search
            context = await self._context(
                located, budget, per_type_cap, count_tokens, count_retrievals=False
            )  # counted below, with the claim
            async with self._pool.write_transaction() as conn:
                claimed = await self.tasks.claim(conn, task_id, "active")
                await _check_unblocked(conn, task_id)
                task = await self.tasks.move(
                    conn,
                    claimed,
                    "active",
                    started_at=utcnow(),
                    completed_at=None,
                    duration_s=None,
                    session_id=session,
                )
                injection = await task_store.record_injection(
                    conn, task_id, context.memory_ids, context.tokens_used
                )
                await self.memory.count_retrievals_in(conn, context.memory_ids)
        self.tasks.count(claimed, "active")
        self.metrics.increment("context.injections")
        self.metrics.increment("context.tokens_injected", context.tokens_used)
        return StartedTask(task, context, injection)

    async def start_next(
        self,
        *,
        plan_id: int | None = None,
        budget: int = CONTEXT_BUDGET,
        session: str | None = None,
    ) -> StartedTask | None:
        """Start the most important ready task (of one plan, if given), or None when there is
        none: a task another caller claims first is passed over for the next one."""
        checks.optional_identifier(plan_id, "plan_id")
        _check_budget(budget, None)
        if session is not None:
            checks.session(session)
        while ready := await self.tasks.ready(plan_id=plan_id, limit=_CLAIM_BATCH):
            for task in ready:
                try:
                    return await self.start_task(task.id, budget=budget, session=session)
                except (IllegalTransition, TaskBlocked):
                    continue  # claimed (or given a new dependency) since it was read
        return None

    async def context_for(
        self,
        task_id: int,
        budget: int = CONTEXT_BUDGET,
        *,
        per_type_cap: int | None = None,
        count_tokens: TokenCounter = approximate_tokens,
        count_retrievals: bool = True,
    ) -> AssembledContext:
        """The context starting the task would inject now, without starting it; the
        memories' retrievals are counted unless told not to (a read-only caller)."""
        checks.identifier(task_id, "task_id")
        _check_budget(budget, per_type_cap)
        checks.flag(count_retrievals, "count_retrievals")
        async with self._pool.read_transaction() as conn:
            located = await self.tasks.locate(conn, task_id)
        return await self._context(
            located, budget, per_type_cap, count_tokens, count_retrievals=count_retrievals
        )

    async def note(self, task_id: int, content: str, content_type: str) -> StoreResult:
        """Keep a memory linked to a task, its phase and its plan; the task's status stays."""
        checks.identifier(task_id, "task_id")
        async with self._pool.read_transaction() as conn:
            located = await self.tasks.locate(conn, task_id)
        return await self.memory.store(
            content,
            content_type,
            plan_id=located.plan_id,
            phase_id=located.task.phase_id,
            task_id=task_id,
        )

    async def complete_task(
        self, task_id: int, output: str | None = None, artifacts: Sequence[Artifact] = ()
    ) -> FinishedTask:
        """Complete an active task; its output and artifacts become memories linked to it."""
        checks.identifier(task_id, "task_id")
        if output is not None:
            checks.text(output, "output")
        _check_artifacts(artifacts)
        with self.metrics.timed("workflow.complete"):
            located = await self._claimable(task_id, "completed")
            # A blank output is no output: nothing to remember.
            items = [Artifact(output, "output")] if output and output.strip() else []
            return await self._finish(located, "completed", [*items, *artifacts])

    async def fail_task(self, task_id: int, error: str) -> FinishedTask:
        """Fail an active task; the error is kept as a memory linked to it."""
        checks.identifier(task_id, "task_id")
        checks.text(error, "error")
        if not error.strip():
            raise InvalidInput("a failed task needs the error text that explains it")
        with self.metrics.timed("workflow.fail"):
            located = await self._claimable(task_id, "failed")
            return await self._finish(located, "failed", [Artifact(error, "error")])

    async def _finish(
        self, located: task_store.Located, to: str, produced: Sequence[Artifact]
    ) -> FinishedTask:
        task = located.task
        items = [
            NewMemory(
                a.content,
                a.content_type,
                plan_id=located.plan_id,
                phase_id=task.phase_id,
                task_id=task.id,
            )
            for a in produced
        ]
        moved: list[MicroTask] = []

        async def transition(conn: AsyncConnection) -> None:
            claimed = await self.tasks.claim(conn, task.id, to)
            moved.append(await self.tasks.move(conn, claimed, to, **finished(claimed.task)))

        memories = await self.memory.store_many(items, together_with=transition)
        (done,) = moved
        self.tasks.count(located, to)
        if done.duration_s is not None:
            self.metrics.observe("task.duration", done.duration_s)
        return FinishedTask(done, memories)

    async def _context(
        self,
        located: task_store.Located,
        budget: int,
        per_type_cap: int | None,
        count_tokens: TokenCounter,
        *,
        count_retrievals: bool,
    ) -> AssembledContext:
        """A task's context: its title and description as the query, its plan's memories
        first."""
        return await assemble(
            self.memory,
            task_query(located.task),
            budget,
            plan_id=located.plan_id,
            per_type_cap=per_type_cap,
            count_tokens=count_tokens,
            count_retrievals=count_retrievals,
        )

    async def _claimable(self, task_id: int, to: str) -> task_store.Located:
        """The task, if it may move to `to` now (checked again when it does)."""
        async with self._pool.read_transaction() as conn:
            located = await self.tasks.claim(conn, task_id, to, lock=False)
            if to == "active":
                await _check_unblocked(conn, task_id)
        return located


def task_query(task: MicroTask) -> str:
    """What a task's context is searched with."""
    return f"{task.title}\n{task.description}"


def _check_budget(budget: int, per_type_cap: int | None) -> None:
    checks.whole(budget, "budget (tokens)", 1)
    if per_type_cap is not None:
        checks.whole(per_type_cap, "per_type_cap (tokens)", 1)


def _check_artifacts(artifacts: object) -> None:
    for artifact in checks.listed(artifacts, "artifacts", "Artifact"):
        if not isinstance(artifact, Artifact):
            raise InvalidInput(f"each artifact must be an Artifact, got {checks.shown(artifact)}")


async def _check_unblocked(conn: AsyncConnection, task_id: int) -> None:
    waiting = await task_store.open_dependencies(conn, task_id)
    if waiting:
        raise TaskBlocked(task_id, waiting)
