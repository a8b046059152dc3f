"""The tools DevStream serves over MCP: thin calls into the facade's services.

Each tool answers with a short text for the model to read and the same result as JSON
(`structuredContent`, described by the tool's output schema). A refusal by DevStream (a
typed error) becomes a tool error carrying its message; no traceback leaves the server.

`CORE` is the small default set an assistant loads; `all` adds the rest of the CLI's
abilities. Descriptions are short on purpose: every client pays for them in tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ToolAnnotations

from devstream import documents
from devstream.errors import DevStreamError
from devstream.mcp.shapes import (
    Budget,
    ContentType,
    Deleted,
    Document,
    Finished,
    Found,
    Limit,
    OneTask,
    OptionalPlan,
    Outlined,
    PhaseSpec,
    PlanId,
    Plans,
    Priority,
    Progress,
    Started,
    Stored,
    TaskId,
    Tasks,
    Whole,
    about,
    result,
)
from devstream.memory import MemoryFilter
from devstream.tasks import PhaseOutline, TaskOutline
from devstream.vocabulary import CONTEXT_BUDGET
from devstream.workflow import Artifact

if TYPE_CHECKING:
    from devstream.app import DevStream
    from devstream.tasks import MicroTask
    from devstream.workflow import FinishedTask

SNIPPET = 100  # characters of a memory shown in a tool's text

# --- the tools ----------------------------------------------------------------------------


class Tools:
    """Every tool, bound to one open store."""

    def __init__(self, ds: DevStream) -> None:
        self.ds = ds

    async def ready_tasks(
        self,
        plan_id: OptionalPlan = None,
        limit: Limit = 5,
    ) -> Annotated[CallToolResult, Tasks]:
        """Tasks ready to start (every dependency completed), most important first."""
        ready = await self.ds.tasks.ready(plan_id=plan_id, limit=limit)
        lines = [_task_line(task) for task in ready] or ["no ready task"]
        return result("\n".join(lines), {"tasks": [asdict(task) for task in ready]})

    async def start_task(
        self,
        task_id: Annotated[int | None, about("Omit to claim the next ready task.", ge=1)] = None,
        plan_id: OptionalPlan = None,
        budget: Budget = CONTEXT_BUDGET,
        session: Annotated[str | None, about("Your session id, from the brief.")] = None,
    ) -> Annotated[CallToolResult, Started]:
        """Start a task and get the memories relevant to it. Without task_id, claims the most
        important ready task atomically: two agents asking at once get different tasks."""
        workflow = self.ds.workflow
        if task_id is None:
            started = await workflow.start_next(plan_id=plan_id, budget=budget, session=session)
            if started is None:
                nothing: Document = {"task": None, "context": None, "injection_id": None}
                return result("no ready task", nothing)
        else:
            started = await workflow.start_task(task_id, budget=budget, session=session)
        context = started.context
        header = (
            f"started {_task_line(started.task)}\n{len(context.included)} memories injected, "
            f"{context.tokens_used}/{budget} tokens" + (" (degraded)" if context.degraded else "")
        )
        body = f"\n\n{context.text}" if context.text else ""
        return result(header + body, documents.started(started))

    async def complete_task(
        self,
        task_id: TaskId,
        output: Annotated[str | None, about("What the task produced.")] = None,
        code: Annotated[list[str] | None, about("Code it wrote, one per item.")] = None,
        decisions: Annotated[list[str] | None, about("Decisions made, and why.")] = None,
    ) -> Annotated[CallToolResult, Finished]:
        """Complete an active task; its output, code and decisions are kept as memories."""
        artifacts = [Artifact(text, "code") for text in code or ()]
        artifacts += [Artifact(text, "decision") for text in decisions or ()]
        done = await self.ds.workflow.complete_task(task_id, output, artifacts)
        return result(_finished_text(done), documents.finished(done))

    async def fail_task(
        self,
        task_id: TaskId,
        error: Annotated[str, about("What went wrong; kept as a memory.")],
    ) -> Annotated[CallToolResult, Finished]:
        """Fail an active task; the error is kept as a memory."""
        done = await self.ds.workflow.fail_task(task_id, error)
        return result(_finished_text(done), documents.finished(done))

    async def search_memory(
        self,
        query: Annotated[str, about("Words, identifiers or a question.")],
        limit: Limit = 10,
        content_types: Annotated[list[ContentType] | None, about("Only these kinds.")] = None,
        plan_id: OptionalPlan = None,
    ) -> Annotated[CallToolResult, Found]:
        """Hybrid (full-text and semantic) search of the project's memory."""
        filters = MemoryFilter(content_types=frozenset(content_types or ()), plan_id=plan_id)
        found = await self.ds.memory.search(query, limit=limit, filters=filters)
        lines = [f"degraded: {found.reason}"] if found.degraded else []
        lines += [
            f"#{hit.entry.id} {hit.entry.content_type}: {_snippet(hit.entry.content)}"
            for hit in found.hits
        ] or ["no matches"]
        return result("\n".join(lines), documents.search(found))

    async def add_memory(
        self,
        content: Annotated[str, about("The text to remember.")],
        content_type: ContentType,
        plan_id: Annotated[int | None, about("Link to a plan.", ge=1)] = None,
        task_id: Annotated[int | None, about("Link to a task.", ge=1)] = None,
    ) -> Annotated[CallToolResult, Stored]:
        """Remember something (a decision, a learning, context...); the same text in the same
        scope is stored once."""
        stored = await self.ds.memory.store(content, content_type, plan_id=plan_id, task_id=task_id)
        entry = stored.entry
        text = f"{'stored' if stored.created else 'already stored'} memory #{entry.id}"
        if stored.warning:
            text += f" (warning: {stored.warning})"
        document = {"memory": documents.entry(entry), "created": stored.created}
        return result(text, {**document, "warning": stored.warning})

    async def outline_plan(
        self,
        title: Annotated[str, about("The plan's title.")],
        phases: Annotated[list[PhaseSpec], about("In order, each with its tasks.")],
        description: Annotated[str, about("What the plan is for.")] = "",
        priority: Priority = 5,
    ) -> Annotated[CallToolResult, Outlined]:
        """Create a plan with its phases, tasks (at most 10 minutes each) and dependencies in
        one call; nothing is created if any part is refused."""
        outline = [
            PhaseOutline(phase["name"], [TaskOutline(**task) for task in phase["tasks"]])
            for phase in phases
        ]
        made = await self.ds.tasks.outline(title, description, outline, priority=priority)
        text = (
            f"created plan #{made.plan.id} {made.plan.title}: {len(made.phases)} phases, "
            f"tasks #{made.tasks[0].id}-#{made.tasks[-1].id}"
            if made.tasks
            else f"created plan #{made.plan.id} {made.plan.title} (no tasks yet)"
        )
        document = {
            "plan": asdict(made.plan),
            "phases": [asdict(phase) for phase in made.phases],
            "tasks": [asdict(task) for task in made.tasks],
        }
        return result(text, document)

    # --- the rest of the CLI's abilities (DEVSTREAM_MCP_TOOLS=all) -------------------

    async def list_plans(
        self, status: Annotated[str | None, about("Only plans in this status.")] = None
    ) -> Annotated[CallToolResult, Plans]:
        """Every plan, or those in one status (draft, active, completed, ...)."""
        plans = await self.ds.tasks.plans(status=status)
        lines = [f"plan #{p.id} [{p.status}] p{p.priority} {p.title}" for p in plans]
        return result("\n".join(lines) or "no plans", {"plans": [asdict(p) for p in plans]})

    async def show_plan(self, plan_id: PlanId) -> Annotated[CallToolResult, Progress]:
        """A plan's phases and progress, and its tasks with what blocks them."""
        progress = await self.ds.tasks.progress(plan_id)
        tasks = await self.ds.tasks.tasks(plan_id=plan_id)
        blocked = await self.ds.tasks.blocked([task.id for task in tasks])
        document = documents.progress(progress)
        document["tasks"] = [{**asdict(t), "blocked": t.id in blocked} for t in tasks]
        text = f"plan #{plan_id}: {progress.done}/{progress.total} tasks done"
        return result("\n".join([text, *(_task_line(t) for t in tasks)]), document)

    async def add_task(
        self,
        phase_id: Annotated[int, about("Phase id.", ge=1)],
        title: Annotated[str, about("Task title.")],
        description: Annotated[str, about("What to do.")] = "",
        priority: Priority = 5,
        depends_on: Annotated[list[Whole] | None, about("Ids of tasks it waits for.")] = None,
    ) -> Annotated[CallToolResult, OneTask]:
        """Add a micro-task (at most 10 minutes) to a phase of an open plan."""
        task = await self.ds.tasks.add_task(
            phase_id, title, description, priority=priority, depends_on=depends_on or ()
        )
        return result(f"added {_task_line(task)}", {"task": asdict(task)})

    async def add_dependency(
        self, task_id: TaskId, depends_on_id: Annotated[int, about("The task it waits for.", ge=1)]
    ) -> Annotated[CallToolResult, OneTask]:
        """Make a pending task wait for another of its plan; a cycle is refused."""
        await self.ds.tasks.add_dependency(task_id, depends_on_id)
        task = await self.ds.tasks.task(task_id)
        return result(f"task #{task_id} waits for task #{depends_on_id}", {"task": asdict(task)})

    async def retry_task(self, task_id: TaskId) -> Annotated[CallToolResult, OneTask]:
        """A failed task back to pending."""
        task = await self.ds.tasks.retry(task_id)
        return result(_task_line(task), {"task": asdict(task)})

    async def skip_task(self, task_id: TaskId) -> Annotated[CallToolResult, OneTask]:
        """Skip a task that will not be done."""
        task = await self.ds.tasks.skip(task_id)
        return result(_task_line(task), {"task": asdict(task)})

    async def delete_memory(
        self, memory_id: Annotated[int, about("Memory id.", ge=1)]
    ) -> Annotated[CallToolResult, Deleted]:
        """Delete a memory for good."""
        await self.ds.memory.delete(memory_id)
        return result(f"deleted memory #{memory_id}", {"deleted": memory_id})


@dataclass(frozen=True)
class Spec:
    """How a tool is served: its name is the method's."""

    name: str
    read_only: bool = False
    # Deletes or overwrites what is stored (adding and moving work along do not).
    destructive: bool = False
    # Calling it again with the same arguments changes nothing more.
    idempotent: bool = False

    def annotations(self) -> ToolAnnotations:
        """What clients may assume; hints left out mean their defaults (the spec's)."""
        if self.read_only:
            return ToolAnnotations(read_only_hint=True)
        return ToolAnnotations(
            destructive_hint=self.destructive, idempotent_hint=self.idempotent or None
        )


CORE = (
    Spec("ready_tasks", read_only=True),
    Spec("start_task"),
    Spec("complete_task"),
    Spec("fail_task"),
    Spec("search_memory", read_only=True),
    Spec("add_memory", idempotent=True),
    Spec("outline_plan"),
)


MORE = (
    Spec("list_plans", read_only=True),
    Spec("show_plan", read_only=True),
    Spec("add_task"),
    Spec("add_dependency", idempotent=True),
    Spec("retry_task"),
    Spec("skip_task"),
    Spec("delete_memory", destructive=True, idempotent=True),
)


def bound(tools: Tools, spec: Spec) -> Callable[..., Awaitable[CallToolResult]]:
    """The tool's method, with DevStream's typed errors turned into tool errors."""
    method: Callable[..., Awaitable[CallToolResult]] = getattr(tools, spec.name)

    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> CallToolResult:
        try:
            return await method(*args, **kwargs)
        except DevStreamError as exc:
            raise ToolError(str(exc)) from exc

    return call


def _task_line(task: MicroTask) -> str:
    return f"task #{task.id} [{task.status}] p{task.priority} {task.title}"


def _finished_text(done: FinishedTask) -> str:
    lines = [_task_line(done.task)]
    lines += [f"kept memory #{m.entry.id} ({m.entry.content_type})" for m in done.memories]
    lines += [f"warning: {warning}" for warning in done.warnings]
    return "\n".join(lines)


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET else flat[: SNIPPET - 1] + "…"
