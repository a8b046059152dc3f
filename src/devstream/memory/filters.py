"""A memory filter, checked before any read: a clear, typed error for each bad field."""

from __future__ import annotations

from datetime import datetime

from devstream import checks
from devstream.db.memory_store import MemoryFilter
from devstream.errors import InvalidInput
from devstream.vocabulary import CONTENT_TYPES, EMBEDDING_STATUSES


def checked_filter(filters: object) -> MemoryFilter:
    if filters is None:
        return MemoryFilter()
    if not isinstance(filters, MemoryFilter):
        raise InvalidInput(f"filters must be a MemoryFilter, got {checks.shown(filters)}")
    for content_type in checks.listed(filters.content_types, "content_types", "content types"):
        checks.one_of(content_type, "content type", CONTENT_TYPES)
    for name in ("plan_id", "phase_id", "task_id"):
        checks.optional_identifier(getattr(filters, name), name)
    for name in ("created_after", "created_before"):
        moment = getattr(filters, name)
        if moment is not None and not isinstance(moment, datetime):
            raise InvalidInput(f"{name} must be a datetime, got {checks.shown(moment)}")
    if filters.embedding_status is not None:
        checks.one_of(filters.embedding_status, "embedding status", EMBEDDING_STATUSES)
    return filters
