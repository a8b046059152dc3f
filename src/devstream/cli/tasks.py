"""`devstream plan|phase|task ...`: the work from the shell."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from devstream import documents
from devstream.cli.output import Output, memories, one_line, pass_output, printable, with_store
from devstream.vocabulary import (
    CONTEXT_BUDGET,
    MAX_PRIORITY,
    MAX_TASK_MINUTES,
    MIN_PRIORITY,
    PLAN_STATUSES,
    TASK_STATUSES,
)

if TYPE_CHECKING:
    from devstream.app import DevStream
    from devstream.tasks import MicroTask, Plan, PlanProgress
    from devstream.workflow import FinishedTask, StartedTask

priority_option = click.option(
    "--priority",
    default=5,
    show_default=True,
    type=click.IntRange(MIN_PRIORITY, MAX_PRIORITY),
    help=f"{MAX_PRIORITY} is the most important.",
)


def task_line(task: MicroTask, blocked: bool = False) -> str:
    status = "blocked" if blocked else task.status
    return printable(
        f"#{task.id:<5} {status:<9} p{task.priority:<3} {task.estimated_minutes:>2} min  "
        f"{one_line(task.title)}"
    )


def progress_text(progress: PlanProgress) -> str:
    plan = progress.plan
    lines = [
        f"plan #{plan.id} {one_line(plan.title)} [{plan.status}] "
        f"{progress.done}/{progress.total} tasks done ({progress.percent:.0f}%)"
    ]
    for phase in progress.phases:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(phase.counts.items()))
        lines.append(
            f"  phase #{phase.phase.id} {one_line(phase.phase.name)} [{phase.phase.status}] "
            f"{phase.done}/{phase.total}" + (f" ({counts})" if counts else "")
        )
    return printable("\n".join(lines))


# --- plans ------------------------------------------------------------------------------


@click.group()
def plan() -> None:
    """Create, list and show intervention plans."""


@plan.command("create")
@click.argument("title")
@click.option("--description", default="", help="What the plan is for.")
@priority_option
@pass_output
def plan_create(out: Output, title: str, description: str, priority: int) -> None:
    """Create a plan (status draft)."""
    from devstream.tasks.service import check_new_plan  # noqa: PLC0415

    check_new_plan(title, description, priority)  # a refusal makes no store
    created: Plan = with_store(
        out, lambda ds: ds.tasks.create_plan(title, description, priority=priority), creates=True
    )
    out.emit(
        {"plan": asdict(created)},
        printable(f"created plan #{created.id} {one_line(created.title)}"),
    )


@plan.command("list")
@click.option("--status", type=click.Choice(PLAN_STATUSES))
@pass_output
def plan_list(out: Output, status: str | None) -> None:
    """List plans, oldest first."""
    plans: list[Plan] = with_store(out, lambda ds: ds.tasks.plans(status=status))
    lines = [f"#{p.id:<5} {p.status:<9} p{p.priority:<3} {one_line(p.title)}" for p in plans]
    out.emit({"plans": [asdict(p) for p in plans]}, printable("\n".join(lines) or "no plans"))


@plan.command("show")
@click.argument("plan_id", type=int)
@pass_output
def plan_show(out: Output, plan_id: int) -> None:
    """A plan's phases, tasks and progress."""

    progress: PlanProgress = with_store(out, lambda ds: ds.tasks.progress(plan_id))
    tasks, blocked = progress.tasks, progress.blocked
    lines = [progress_text(progress)]
    for phase in progress.phases:
        lines.append(f"\n{one_line(phase.phase.name)}")
        lines += [
            "  " + task_line(t, t.id in blocked) for t in tasks if t.phase_id == phase.phase.id
        ]
    document = documents.progress(progress)
    document["tasks"] = [{**asdict(t), "blocked": t.id in blocked} for t in tasks]
    out.emit(document, "\n".join(lines))


@plan.command("status")
@click.argument("plan_id", type=int)
@click.argument("status", type=click.Choice(PLAN_STATUSES))
@pass_output
def plan_status(out: Output, plan_id: int, status: str) -> None:
    """Move a plan to STATUS (draft -> active -> completed | archived | cancelled)."""
    changed: Plan = with_store(out, lambda ds: ds.tasks.set_plan_status(plan_id, status))
    out.emit({"plan": asdict(changed)}, f"plan #{changed.id} is {changed.status}")


# --- phases -----------------------------------------------------------------------------


@click.group()
def phase() -> None:
    """Add phases to a plan, or remove one without tasks."""


@phase.command("add")
@click.argument("plan_id", type=int)
@click.argument("name")
@click.option("--position", type=click.IntRange(0), help="Default: after the last phase.")
@pass_output
def phase_add(out: Output, plan_id: int, name: str, position: int | None) -> None:
    """Add phase NAME to plan PLAN_ID."""
    added = with_store(out, lambda ds: ds.tasks.add_phase(plan_id, name, position=position))
    out.emit(
        {"phase": asdict(added)},
        printable(f"added phase #{added.id} {one_line(added.name)} at position {added.position}"),
    )


@phase.command("remove")
@click.argument("phase_id", type=int)
@pass_output
def phase_remove(out: Output, phase_id: int) -> None:
    """Remove phase PHASE_ID, which has no tasks, from its open plan."""
    with_store(out, lambda ds: ds.tasks.remove_phase(phase_id))
    out.emit({"removed": {"phase_id": phase_id}}, f"removed phase #{phase_id}")


# --- tasks ------------------------------------------------------------------------------


@click.group()
def task() -> None:
    """Add, order and run micro-tasks."""


@task.command("add")
@click.argument("phase_id", type=int)
@click.argument("title")
@click.option("--description", default="")
@priority_option
@click.option(
    "--estimate",
    "estimated_minutes",
    default=5,
    show_default=True,
    type=int,
    help=f"Minutes; at most {MAX_TASK_MINUTES} (split larger work).",
)
@click.option(
    "--after", "depends_on", type=int, multiple=True, help="Task it depends on; repeatable."
)
@pass_output
def task_add(
    out: Output,
    *,
    phase_id: int,
    title: str,
    description: str,
    priority: int,
    estimated_minutes: int,
    depends_on: tuple[int, ...],
) -> None:
    """Add task TITLE to phase PHASE_ID."""
    added: MicroTask = with_store(
        out,
        lambda ds: ds.tasks.add_task(
            phase_id,
            title,
            description,
            priority=priority,
            estimated_minutes=estimated_minutes,
            depends_on=depends_on,
        ),
    )
    out.emit({"task": asdict(added)}, f"added task #{added.id}")


@task.command("list")
@click.option("--plan", "plan_id", type=int)
@click.option("--phase", "phase_id", type=int)
@click.option("--status", type=click.Choice(TASK_STATUSES))
@pass_output
def task_list(out: Output, plan_id: int | None, phase_id: int | None, status: str | None) -> None:
    """List tasks in phase order."""

    async def work(ds: DevStream) -> tuple[list[MicroTask], set[int]]:
        tasks = await ds.tasks.tasks(plan_id=plan_id, phase_id=phase_id, status=status)
        return tasks, await ds.tasks.blocked([t.id for t in tasks])

    tasks, blocked = with_store(out, work)
    out.emit(
        {"tasks": [{**asdict(t), "blocked": t.id in blocked} for t in tasks]},
        "\n".join(task_line(t, t.id in blocked) for t in tasks) or "no tasks",
    )


@task.command("ready")
@click.option("--plan", "plan_id", type=int)
@click.option("--limit", type=click.IntRange(1))
@pass_output
def task_ready(out: Output, plan_id: int | None, limit: int | None) -> None:
    """Tasks that can start now, most important first."""
    ready: list[MicroTask] = with_store(
        out, lambda ds: ds.tasks.ready(plan_id=plan_id, limit=limit)
    )
    out.emit(
        {"tasks": [asdict(t) for t in ready]},
        "\n".join(task_line(t) for t in ready) or "nothing is ready",
    )


@task.command("start")
@click.argument("task_id", type=int)
@click.option(
    "--budget",
    default=CONTEXT_BUDGET,
    show_default=True,
    type=click.IntRange(1),
    help="Tokens of context to inject.",
)
@click.option("--session", metavar="ID", help="The assistant session that holds the task.")
@pass_output
def task_start(out: Output, task_id: int, budget: int, session: str | None) -> None:
    """Start a ready task and print the context injected for it."""
    started: StartedTask = with_store(
        out, lambda ds: ds.workflow.start_task(task_id, budget=budget, session=session)
    )
    context = started.context
    header = (
        f"started task #{task_id}; injected {memories(len(context.included))}, "
        f"{context.tokens_used}/{budget} tokens" + (" (degraded)" if context.degraded else "")
    )
    out.emit(
        documents.started(started),
        printable(header + (f"\n\n{context.text}" if context.text else "")),
    )


@task.command("complete")
@click.argument("task_id", type=int)
@click.option("--output", "output", help="What the task produced; kept as an output memory.")
@click.option(
    "--code",
    "code_files",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="A file kept as a code memory; repeatable.",
)
@click.option("--decision", "decisions", multiple=True, help="A decision to keep; repeatable.")
@pass_output
def task_complete(
    out: Output,
    task_id: int,
    output: str | None,
    code_files: tuple[Path, ...],
    decisions: tuple[str, ...],
) -> None:
    """Complete an active task, capturing what it produced as memories."""
    from devstream.workflow import Artifact  # noqa: PLC0415

    limit = out.settings.max_memory_chars
    artifacts = [Artifact(_read(path, limit), "code") for path in code_files]
    artifacts += [Artifact(text, "decision") for text in decisions]
    done: FinishedTask = with_store(
        out, lambda ds: ds.workflow.complete_task(task_id, output, artifacts)
    )
    _emit_finished(out, done)


@task.command("fail")
@click.argument("task_id", type=int)
@click.option("--error", "error", required=True, help="What went wrong; kept as an error memory.")
@pass_output
def task_fail(out: Output, task_id: int, error: str) -> None:
    """Fail an active task, keeping the error as a memory."""
    done: FinishedTask = with_store(out, lambda ds: ds.workflow.fail_task(task_id, error))
    _emit_finished(out, done)


@task.command("retry")
@click.argument("task_id", type=int)
@pass_output
def task_retry(out: Output, task_id: int) -> None:
    """Put a failed task back to pending."""
    retried: MicroTask = with_store(out, lambda ds: ds.tasks.retry(task_id))
    out.emit(
        {"task": asdict(retried)},
        f"task #{task_id} is pending again (retry {retried.retry_count})",
    )


@task.command("skip")
@click.argument("task_id", type=int)
@pass_output
def task_skip(out: Output, task_id: int) -> None:
    """Skip a pending or active task."""
    skipped: MicroTask = with_store(out, lambda ds: ds.tasks.skip(task_id))
    out.emit({"task": asdict(skipped)}, f"task #{task_id} skipped")


@task.command("release")
@click.argument("session")
@pass_output
def task_release(out: Output, session: str) -> None:
    """Put the active tasks an ended assistant session holds back to pending."""
    released = with_store(out, lambda ds: ds.tasks.release(session))
    lines = [f"released {task_line(task)}" for task in released] or ["nothing to release"]
    out.emit({"tasks": [asdict(task) for task in released]}, "\n".join(lines))


@task.command("depend")
@click.argument("task_id", type=int)
@click.argument("depends_on_id", type=int)
@pass_output
def task_depend(out: Output, task_id: int, depends_on_id: int) -> None:
    """Make TASK_ID wait for DEPENDS_ON_ID (same plan, no cycles)."""
    edge = with_store(out, lambda ds: ds.tasks.add_dependency(task_id, depends_on_id))
    out.emit({"dependency": asdict(edge)}, f"task #{task_id} now waits for task #{depends_on_id}")


@task.command("undepend")
@click.argument("task_id", type=int)
@click.argument("depends_on_id", type=int)
@pass_output
def task_undepend(out: Output, task_id: int, depends_on_id: int) -> None:
    """TASK_ID no longer waits for DEPENDS_ON_ID."""
    with_store(out, lambda ds: ds.tasks.remove_dependency(task_id, depends_on_id))
    out.emit(
        {"removed": {"task_id": task_id, "depends_on_id": depends_on_id}},
        f"task #{task_id} no longer waits for task #{depends_on_id}",
    )


def _read(path: Path, limit: int) -> str:
    """The file's text, read no further than one character past what a memory may hold (a
    device such as /dev/zero never ends)."""
    try:
        with path.open(encoding="utf-8") as file:
            text = file.read(limit + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--code") from exc
    if len(text) > limit:
        raise click.BadParameter(
            f"{path} has more than {limit:,} characters, the most a memory holds "
            "(max_memory_chars)",
            param_hint="--code",
        )
    return text


def _emit_finished(out: Output, done: FinishedTask) -> None:
    task = done.task
    lines = [f"task #{task.id} {task.status}" + _took(task)]
    lines += [
        f"  captured memory #{m.entry.id} ({m.entry.content_type}, {m.entry.embedding_status})"
        for m in done.memories
    ]
    lines += [f"warning: {warning}" for warning in done.warnings]
    out.emit(documents.finished(done), "\n".join(lines))


def _took(task: MicroTask) -> str:
    return "" if task.duration_s is None else f" after {task.duration_s:.1f}s"
