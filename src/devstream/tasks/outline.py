"""A whole plan in one call: its phases, their tasks and the dependencies between them.

Assistants lay out work this way; `TaskService.outline` creates it in one transaction, so
an outline that is refused anywhere (a bad title, a dependency that closes a cycle) leaves
nothing behind. Dependencies name tasks by their 1-based position in the outline, counted
across phases in the order they are listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from devstream import checks
from devstream.db.records import MicroTask, Phase, Plan
from devstream.errors import InvalidInput


@dataclass(frozen=True)
class TaskOutline:
    title: str
    description: str = ""
    priority: int = 5
    estimated_minutes: int = 5
    depends_on: Sequence[int] = ()  # positions of other tasks of the outline, from 1


@dataclass(frozen=True)
class PhaseOutline:
    name: str
    tasks: Sequence[TaskOutline] = ()


@dataclass(frozen=True)
class Outlined:
    plan: Plan
    phases: list[Phase]
    tasks: list[MicroTask] = field(default_factory=list)  # in outline order


def checked(phases: object) -> list[PhaseOutline]:
    """The outline's phases, every field checked before anything is written."""
    outlined = [_checked_phase(phase) for phase in checks.listed(phases, "phases", "phases")]
    tasks = tasks_of(outlined)
    for position, task in enumerate(tasks, start=1):
        for other in checks.identifiers(task.depends_on, "depends_on"):
            if other > len(tasks):
                raise InvalidInput(
                    f"task {position} of the outline depends on task {other}; "
                    f"its tasks are numbered 1 to {len(tasks)}"
                )
            if other == position:
                raise InvalidInput(f"task {position} of the outline depends on itself")
    return outlined


def tasks_of(phases: Sequence[PhaseOutline]) -> list[TaskOutline]:
    """Every task of the outline in order: position n is element n - 1."""
    return [task for phase in phases for task in phase.tasks]


def _checked_phase(phase: object) -> PhaseOutline:
    if not isinstance(phase, PhaseOutline):
        raise InvalidInput(f"each phase must be a PhaseOutline, got {checks.shown(phase)}")
    checks.title_of("phase")(phase.name)
    for task in checks.listed(phase.tasks, "tasks", "tasks"):
        if not isinstance(task, TaskOutline):
            raise InvalidInput(f"each task must be a TaskOutline, got {checks.shown(task)}")
        checks.title_of("task")(task.title)
        checks.description(task.description)
        checks.priority(task.priority)
        checks.estimate(task.estimated_minutes)
    return phase
