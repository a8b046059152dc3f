"""Plans, phases and micro-tasks: their status flows, dependencies and progress.

What callers use is here; the memory-aware workflow that starts and finishes tasks is
`devstream.workflow`, above this package and `devstream.memory`.
"""

from devstream.db.records import ContextInjection, Dependency, MicroTask, Phase, Plan, TaskEvent
from devstream.tasks.outline import Outlined, PhaseOutline, TaskOutline
from devstream.tasks.progress import PhaseProgress, PlanProgress
from devstream.tasks.service import TaskService

__all__ = [
    "ContextInjection",
    "Dependency",
    "MicroTask",
    "Outlined",
    "Phase",
    "PhaseOutline",
    "PhaseProgress",
    "Plan",
    "PlanProgress",
    "TaskEvent",
    "TaskOutline",
    "TaskService",
]
