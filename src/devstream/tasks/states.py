"""Which status may follow which, for plans and micro-tasks."""

from __future__ import annotations

from collections.abc import Mapping

from devstream.errors import IllegalTransition

Flow = Mapping[str, tuple[str, ...]]

PLAN_FLOW: Flow = {
    "draft": ("active", "cancelled"),
    "active": ("completed", "archived", "cancelled"),
    "completed": ("archived",),
    "archived": (),
    "cancelled": (),
}

# A failed task goes back to pending on retry; completed and skipped are final.
TASK_FLOW: Flow = {
    "pending": ("active", "skipped"),
    "active": ("completed", "failed", "skipped"),
    "failed": ("pending",),
    "completed": (),
    "skipped": (),
}


def check(flow: Flow, kind: str, key: int, current: str, requested: str) -> None:
    allowed = flow[current]
    if requested not in allowed:
        raise IllegalTransition(kind, key, current, requested, allowed)
