"""Input checks for plans, phases and tasks: each raises InvalidInput naming what is wrong."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeGuard

from devstream.errors import InvalidInput
from devstream.tasks.states import Flow
from devstream.vocabulary import MAX_PRIORITY, MAX_TASK_MINUTES, MAX_TITLE, MIN_PRIORITY, OPEN_PLANS

Check = Callable[[Any], None]


def whole_number(value: object) -> TypeGuard[int]:
    """An int that is not a bool (True would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def title_of(kind: str) -> Check:
    """The check for a plan or task title, or a phase name."""
    what = f"{kind} {'name' if kind == 'phase' else 'title'}"

    def check(value: object) -> None:
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"{what} is empty")
        if len(value) > MAX_TITLE:
            raise InvalidInput(f"{what} has {len(value)} characters; the maximum is {MAX_TITLE}")

    return check


def text(value: object) -> None:
    if not isinstance(value, str):
        raise InvalidInput(f"a description is text, got {type(value).__name__}")


def priority(value: object) -> None:
    if not whole_number(value) or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidInput(
            f"priority must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}, got {value!r}"
        )


def estimate(minutes: object) -> None:
    if not whole_number(minutes) or minutes < 1:
        raise InvalidInput(
            f"estimate must be a whole number of minutes, at least 1; got {minutes!r}"
        )
    if whole_number(minutes) and minutes > MAX_TASK_MINUTES:
        raise InvalidInput(
            f"a micro-task takes at most {MAX_TASK_MINUTES} minutes; {minutes} is too long",
            hint="split it into smaller tasks",
        )


def position(value: object) -> None:
    if not whole_number(value) or value < 0:
        raise InvalidInput(f"a phase position is a whole number from 0, got {value!r}")


def limit(value: object) -> None:
    if value is not None and (not whole_number(value) or value < 1):
        raise InvalidInput(f"limit must be a whole number from 1, got {value!r}")


def known(status: str, flow: Flow, what: str) -> None:
    if status not in flow:
        raise InvalidInput(f"unknown {what} {status!r}; use one of {', '.join(flow)}")


def plan_open(plan_id: int, status: str) -> None:
    if status not in OPEN_PLANS:
        raise InvalidInput(f"plan {plan_id} is {status}; its work can no longer change")
