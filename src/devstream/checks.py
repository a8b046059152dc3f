"""Argument checks for every public entry point, run before anything touches the store.

Each check raises `InvalidInput` naming the argument and the rule it breaks. The rules are
the same everywhere: an id is a whole number from 1 to 2^63 - 1 (never a bool or a
string that looks like one); text that is stored is a `str` without NUL characters or lone
surrogates (SQLite and UTF-8 can hold neither faithfully), while a search query, which is
never stored, may hold them (they match nothing); numbers are real and finite, in range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

from devstream.errors import InvalidInput
from devstream.vocabulary import (
    MAX_PRIORITY,
    MAX_SESSION_ID,
    MAX_TASK_MINUTES,
    MAX_TITLE,
    MIN_PRIORITY,
    OPEN_PLANS,
)

MAX_ID = 2**63 - 1  # SQLite's largest integer
# The largest a plain integer column holds on every backend (PostgreSQL's `integer`): an
# export must import into either.
MAX_INT = 2**31 - 1
_SHOWN = 60  # characters of a refused value quoted in the error

Check = Callable[[Any], None]


def whole_number(value: object) -> TypeGuard[int]:
    """An int that is not a bool (True would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def shown(value: object) -> str:
    """A refused value as an error quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


# --- ids and numbers -------------------------------------------------------------------


def identifier(value: object, name: str) -> int:
    return whole(value, name, 1)


def optional_identifier(value: object, name: str) -> int | None:
    return None if value is None else identifier(value, name)


def listed(values: object, name: str, what: str) -> list[object]:
    """The items of a list, set or tuple of `what` (a lone string is not a list of them)."""
    if not isinstance(values, (list, tuple, set, frozenset)):
        raise InvalidInput(f"{name} must be a list of {what}, got {shown(values)}")
    return list(values)


def identifiers(values: object, name: str) -> list[int]:
    return [identifier(value, f"each of {name}") for value in listed(values, name, "ids")]


def whole(value: object, name: str, low: int, high: int | None = None) -> int:
    """A whole number in [low, high] (up to the largest the store holds when `high` is None)."""
    upper = MAX_ID if high is None else high
    if not whole_number(value) or not low <= value <= upper:
        span = f"from {low} to {'2^63-1' if high is None else high}"
        raise InvalidInput(f"{name} must be a whole number {span}, got {shown(value)}")
    return value


def number(value: object, name: str, low: float, high: float) -> float:
    """A real, finite number in [low, high]; ints count, bools and strings do not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{name} must be a number, got {shown(value)}")
    try:
        real = float(value)
    except OverflowError:  # a whole number past any float's range
        real = math.inf
    if not math.isfinite(real) or not low <= real <= high:
        raise InvalidInput(f"{name} must be a number from {low:g} to {high:g}, got {shown(value)}")
    return real


def flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false, got {shown(value)}")
    return value


# --- text --------------------------------------------------------------------------------


def text(value: object, name: str, *, required: bool = False, max_chars: int | None = None) -> str:
    """Text that SQLite stores and returns exactly; `required`: not blank."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidInput(f"{name} is empty")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidInput(f"{name} has {len(value):,} characters; the maximum is {max_chars:,}")
    if "\x00" in value:
        raise InvalidInput(f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{name} is not valid Unicode text (lone surrogate)") from exc
    return value


def query(value: object) -> str:
    """What a search looks for: any text (what it cannot match is dropped, not refused)."""
    if not isinstance(value, str):
        raise InvalidInput(f"a search query must be text, got {type(value).__name__}")
    return value


def words(values: object, name: str) -> list[str]:
    return [text(value, f"each of {name}") for value in listed(values, name, "texts")]


def one_of(value: object, name: str, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise InvalidInput(f"unknown {name} {shown(value)}; use one of {', '.join(options)}")
    return value


# --- plans, phases and tasks ---------------------------------------------------------------


def session(value: object) -> None:
    """An assistant's session id: short text, not blank."""
    text(value, "session id", required=True, max_chars=MAX_SESSION_ID)


def title_of(kind: str) -> Check:
    """The check for a plan or task title, or a phase name."""
    what = f"{kind} {'name' if kind == 'phase' else 'title'}"

    def check(value: object) -> None:
        text(value, what, required=True, max_chars=MAX_TITLE)

    return check


def description(value: object) -> None:
    text(value, "description")


def priority(value: object) -> None:
    whole(value, "priority", MIN_PRIORITY, MAX_PRIORITY)


def estimate(minutes: object) -> None:
    if whole_number(minutes) and minutes > MAX_TASK_MINUTES:
        raise InvalidInput(
            f"a micro-task takes at most {MAX_TASK_MINUTES} minutes; {shown(minutes)} is too long",
            hint="split it into smaller tasks",
        )
    whole(minutes, "estimate (minutes)", 1, MAX_TASK_MINUTES)


def position(value: object) -> None:
    whole(value, "phase position", 0, MAX_INT)


def limit(value: object) -> None:
    if value is not None:
        whole(value, "limit", 1)


def plan_open(plan_id: int, status: str) -> None:
    if status not in OPEN_PLANS:
        raise InvalidInput(f"plan {plan_id} is {status}; its work can no longer change")
