"""What each field of an export line may hold, checked before an import writes anything.

The rules are the store's own: the argument checks its services apply (`devstream.checks`)
and what its columns' types and constraints accept. A line that broke one would otherwise
fail halfway through an import, after earlier transactions had committed, or, on SQLite,
which keeps any value in any column, be written as it is: text in a count, a vector that
does not hold its dimension's values, which then broke every search of the store.
"""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Column, Float, Integer, LargeBinary, String, Table

from devstream import checks
from devstream.db.transfer import EMBEDDING_COLUMNS, TABLES
from devstream.db.types import UTCDateTime
from devstream.errors import InvalidInput
from devstream.memory.vectors import decode, fault
from devstream.vocabulary import (
    CONTENT_TYPES,
    EMBEDDING_STATUSES,
    PHASE_STATUSES,
    PLAN_STATUSES,
    TASK_STATUSES,
)

Rule = Callable[[Any], object]  # raises InvalidInput for a value it refuses


def check_fields(kind: str, record: dict[str, Any]) -> None:
    """Refuse (InvalidInput) a line of a known kind holding a value its column cannot.
    Missing values and the links between lines are the caller's to check."""
    for name in _LEAVABLE[kind]:
        if name in record and record[name] is None:
            raise InvalidInput(f"{name} may be left out, not null")
    for name, rule in _RULES[kind].items():
        value = record.get(name)
        if value is not None:
            rule(value)
    if kind == "memory":
        _check_vector(
            record.get("embedding"), record.get("embedding_model"), record.get("embedding_dim")
        )


def _check_vector(vector: Any, model: Any, dimension: Any) -> None:
    """A memory's vector holds `embedding_dim` finite float32 values of a named model."""
    if vector is None and model is None and dimension is None:
        return
    if vector is None or model is None:
        raise InvalidInput("embedding comes without its vector or its model")
    checks.whole(dimension, "embedding_dim", 1, checks.MAX_INT)
    try:
        raw = base64.b64decode(vector, validate=True)
    except (TypeError, ValueError) as exc:  # binascii.Error is a ValueError
        raise InvalidInput("embedding is not base64") from exc
    if len(raw) != 4 * dimension:
        raise InvalidInput(
            f"embedding holds {len(raw)} bytes, not the {4 * dimension} of "
            f"{dimension} float32 values"
        )
    if problem := fault(decode(raw)):
        raise InvalidInput(f"embedding has {problem}")


def _moment(value: object, name: str) -> None:
    """An ISO 8601 time with its UTC offset, as exports write them, that is a time in UTC
    too (the store keeps UTC: 9999-12-31T23:59-14:00 is past the last one)."""
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
        if moment is not None and moment.tzinfo is not None:
            moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidInput(
            f"{name} must be an ISO 8601 time with its UTC offset, got {checks.shown(value)}"
        )


def _by_type(column: Column[Any]) -> Rule | None:
    """The rule a column's type makes (links and ids: identifiers; other whole numbers:
    counts from 0 that any backend's integer holds); vectors are checked as a whole
    (`_check_vector`)."""
    name = column.name
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return functools.partial(_moment, name=name)
    if isinstance(kind, Integer):
        if column.primary_key or column.foreign_keys:
            return functools.partial(checks.identifier, name=name)
        return functools.partial(checks.whole, name=name, low=0, high=checks.MAX_INT)
    if isinstance(kind, Float):
        return functools.partial(checks.number, name=name, low=0.0, high=math.inf)
    if isinstance(kind, String):  # Text too
        return functools.partial(checks.text, name=name, max_chars=kind.length)
    assert isinstance(kind, LargeBinary), f"no rule for {column}"
    return None


def _one_of(name: str, options: tuple[str, ...]) -> Rule:
    return functools.partial(checks.one_of, name=name, options=options)


# Columns whose constraint says more than their type.
_SPECIAL: dict[tuple[str, str], Rule | None] = {
    ("plan", "title"): checks.title_of("plan"),
    ("plan", "status"): _one_of("plan status", PLAN_STATUSES),
    ("plan", "priority"): checks.priority,
    ("phase", "name"): checks.title_of("phase"),
    ("phase", "status"): _one_of("phase status", PHASE_STATUSES),
    ("task", "title"): checks.title_of("task"),
    ("task", "status"): _one_of("task status", TASK_STATUSES),
    ("task", "priority"): checks.priority,
    ("task", "estimated_minutes"): checks.estimate,
    ("task", "session_id"): checks.session,
    ("task_event", "from_status"): _one_of("task status", TASK_STATUSES),
    ("task_event", "to_status"): _one_of("task status", TASK_STATUSES),
    ("memory", "content"): functools.partial(checks.text, name="memory content", required=True),
    ("memory", "content_type"): _one_of("content type", CONTENT_TYPES),
    ("memory", "embedding_status"): _one_of("embedding status", EMBEDDING_STATUSES),
    ("memory", "embedding_dim"): None,  # with the vector
    ("context_injection", "memory_ids"): functools.partial(checks.identifiers, name="memory_ids"),
}


def _rules(kind: str, table: Table) -> dict[str, Rule]:
    found = {
        column.name: _SPECIAL[(kind, column.name)]
        if (kind, column.name) in _SPECIAL
        else _by_type(column)
        for column in table.columns
    }
    return {name: rule for name, rule in found.items() if rule is not None}


_RULES = {kind: _rules(kind, table) for kind, table in TABLES.items()}
# Columns an export may leave out (the database has a default) but never holds null.
_LEAVABLE = {
    kind: [c.name for c in table.columns if not c.nullable and c.name in EMBEDDING_COLUMNS]
    for kind, table in TABLES.items()
}
