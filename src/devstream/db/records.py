"""Immutable rows as the rest of DevStream sees them; field names equal column names."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Plan:
    id: int
    title: str
    description: str
    status: str
    priority: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Phase:
    id: int
    plan_id: int
    name: str
    position: int
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class MicroTask:
    id: int
    phase_id: int
    title: str
    description: str
    status: str
    priority: int
    estimated_minutes: int
    retry_count: int
    started_at: datetime | None
    completed_at: datetime | None
    duration_s: float | None
    created_at: datetime
    updated_at: datetime
    session_id: str | None = None  # the assistant session holding it while active


@dataclass(frozen=True)
class Dependency:
    task_id: int
    depends_on_id: int
    created_at: datetime


@dataclass(frozen=True)
class TaskEvent:
    id: int
    task_id: int
    from_status: str
    to_status: str
    at: datetime


@dataclass(frozen=True)
class ContextInjection:
    id: int
    task_id: int
    memory_ids: str  # a JSON array
    tokens: int
    injected_at: datetime


@dataclass(frozen=True)
class MemoryEntry:
    id: int
    content: str
    content_type: str
    keywords: str
    content_hash: str
    plan_id: int | None
    phase_id: int | None
    task_id: int | None
    embedding: bytes | None
    embedding_model: str | None
    embedding_dim: int | None
    embedding_status: str
    access_count: int
    created_at: datetime
    updated_at: datetime
    embedding_attempts: int
    embedding_error: str | None
