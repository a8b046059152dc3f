"""DevStream's results as JSON-ready documents: what `--json` prints and MCP tools return.

Records become dicts of their columns (a memory's embedding bytes left out); datetimes
stay datetimes, for the caller's encoder (the CLI's `json.dumps`, the MCP SDK's pydantic).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devstream.memory import MemoryEntry, SearchResult
    from devstream.tasks import PlanProgress
    from devstream.workflow import FinishedTask, StartedTask

Document = dict[str, Any]


def entry(memory: MemoryEntry) -> Document:
    document = asdict(memory)
    document.pop("embedding")
    return document


def search(result: SearchResult) -> Document:
    return {
        "query": result.query,
        "degraded": result.degraded,
        "reason": result.reason,
        "hits": [
            {
                "id": hit.entry.id,
                "score": hit.score,
                "similarity": hit.similarity,
                "text_score": hit.text_score,
                "content_type": hit.entry.content_type,
                "content": hit.entry.content,
            }
            for hit in result.hits
        ],
    }


def progress(plan: PlanProgress) -> Document:
    return {
        "plan": asdict(plan.plan),
        "done": plan.done,
        "total": plan.total,
        "percent": round(plan.percent, 1),
        "phases": [
            {
                **asdict(phase.phase),
                "counts": phase.counts,
                "done": phase.done,
                "total": phase.total,
                "complete": phase.complete,
            }
            for phase in plan.phases
        ],
    }


def started(task: StartedTask) -> Document:
    context = task.context
    return {
        "task": asdict(task.task),
        "context": {
            "text": context.text,
            "memory_ids": context.memory_ids,
            "tokens_used": context.tokens_used,
            "degraded": context.degraded,
        },
        "injection_id": task.injection.id,
    }


def finished(done: FinishedTask) -> Document:
    return {
        "task": asdict(done.task),
        "memories": [
            {
                "id": m.entry.id,
                "content_type": m.entry.content_type,
                "created": m.created,
                "embedding_status": m.entry.embedding_status,
            }
            for m in done.memories
        ],
        "warnings": done.warnings,
    }
