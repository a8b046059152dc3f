"""`devstream demo`: a full tour on a fresh database, offline.

A plan with three phases and dependent tasks; memories from earlier work; every task run in
ready order with context injected from memory and its output captured back (one fails and
is retried); a search over what was captured; the metrics it all produced.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstream.app import DevStream
from devstream.config import Settings
from devstream.memory import NewMemory
from devstream.workflow import Artifact

BUDGET = 400  # tokens of context per task: small, so packing shows

EARLIER_MEMORIES = [
    NewMemory("Search results are cached per query for 60 seconds; writes invalidate", "decision"),
    NewMemory("An LRU cache of 10k entries kept search latency flat under load", "learning"),
    NewMemory("The cache key is the normalised query text plus its filters", "documentation"),
    NewMemory("Stale results appeared when the cache ignored the store generation token", "error"),
    NewMemory(
        "def cache_key(query, filters):\n    return (' '.join(query.split()), filters)", "code"
    ),
    NewMemory("Searches are read-heavy: about 50 reads for every write", "context"),
]


@dataclass(frozen=True)
class Step:
    phase: str
    title: str
    description: str
    output: str
    after: tuple[str, ...] = ()
    artifact: Artifact | None = None
    fails_first: str | None = None  # the error of a first, failed attempt


PLAN = [
    Step(
        "Design",
        "Choose the cache policy",
        "LRU or time-based expiry for search results",
        "LRU with a 10k-entry bound; entries expire when the store generation changes",
        artifact=Artifact(
            "Invalidate cached searches on every store generation change", "decision"
        ),
    ),
    Step(
        "Design",
        "Define the cache key",
        "Normalised query text and filters",
        "Key = normalised query + filters; content types sorted",
        after=("Choose the cache policy",),
    ),
    Step(
        "Build",
        "Write the cache layer",
        "Cache in front of hybrid search",
        "SearchCache wraps search(); hit rate 82% on the replayed log",
        after=("Define the cache key",),
        artifact=Artifact("class SearchCache:\n    def __init__(self, size=10_000): ...", "code"),
        fails_first="Cached results survived a write: the generation token was not checked",
    ),
    Step(
        "Build",
        "Expose cache metrics",
        "Hits, misses and evictions in the registry",
        "cache.hits / cache.misses / cache.evictions counters added",
        after=("Write the cache layer",),
    ),
    Step(
        "Verify",
        "Benchmark cached search",
        "p50 with and without the cache",
        "Cached p50 0.05 ms against 0.6 ms uncached",
        after=("Write the cache layer",),
    ),
    Step(
        "Verify",
        "Test invalidation",
        "A write must never leave a stale cached result",
        "Rolled-back and foreign writes both invalidate; 12 tests",
        after=("Expose cache metrics", "Benchmark cached search"),
        artifact=Artifact("Invalidate on the generation token, never on a timer alone", "learning"),
    ),
]

SEARCH_QUERY = "cache invalidation generation token"


async def tour(ds: DevStream) -> dict[str, Any]:
    """Run the whole tour on `ds` (an empty store) and describe what happened."""
    await ds.memory.store_many(EARLIER_MEMORIES)
    plan = await ds.tasks.create_plan(
        "Add a search cache", "Cache hybrid search results safely", priority=8
    )
    phases: dict[str, int] = {}
    ids: dict[str, int] = {}
    for step in PLAN:
        if step.phase not in phases:
            phases[step.phase] = (await ds.tasks.add_phase(plan.id, step.phase)).id
        task = await ds.tasks.add_task(
            phases[step.phase],
            step.title,
            step.description,
            estimated_minutes=5,
            depends_on=[ids[name] for name in step.after],
        )
        ids[step.title] = task.id
    runs, injected, captured = await _run_all(ds, plan.id)
    await ds.tasks.set_plan_status(plan.id, "completed")
    progress = await ds.tasks.progress(plan.id)
    search = await ds.memory.search(SEARCH_QUERY, limit=5)
    report = await ds.report()
    return {
        "plan": {
            "id": plan.id,
            "title": plan.title,
            "status": progress.plan.status,
            "done": progress.done,
            "total": progress.total,
            "phases": [
                {"name": p.phase.name, "status": p.phase.status, "done": p.done, "total": p.total}
                for p in progress.phases
            ],
        },
        "tasks_run": runs,
        "context_injected": injected,
        "memories_captured": captured,
        "search": {
            "query": SEARCH_QUERY,
            "degraded": search.degraded,
            "hits": [
                {
                    "id": h.entry.id,
                    "content_type": h.entry.content_type,
                    "score": h.score,
                    "content": h.entry.content,
                }
                for h in search.hits
            ],
        },
        "metrics": report,
    }


async def _run_all(
    ds: DevStream, plan_id: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Start, then complete (or fail and retry), whatever is ready until nothing is."""
    steps = {step.title: step for step in PLAN}
    runs: list[dict[str, Any]] = []
    injected: list[dict[str, Any]] = []
    captured: list[dict[str, Any]] = []
    failed_once: set[str] = set()
    while ready := await ds.tasks.ready(plan_id=plan_id, limit=1):
        task = ready[0]
        step = steps[task.title]
        started = await ds.workflow.start_task(task.id, budget=BUDGET)
        injected.append(
            {
                "task_id": task.id,
                "memory_ids": started.context.memory_ids,
                "tokens": started.context.tokens_used,
                "budget": BUDGET,
            }
        )
        if step.fails_first and step.title not in failed_once:
            failed_once.add(step.title)
            finished = await ds.workflow.fail_task(task.id, step.fails_first)
            await ds.tasks.retry(task.id)
        else:
            artifacts = [step.artifact] if step.artifact else []
            finished = await ds.workflow.complete_task(task.id, step.output, artifacts)
        runs.append(
            {
                "task_id": task.id,
                "title": task.title,
                "status": finished.task.status,
                "retry_count": finished.task.retry_count,
                "duration_s": finished.task.duration_s,
            }
        )
        captured += [
            {
                "id": m.entry.id,
                "task_id": task.id,
                "content_type": m.entry.content_type,
                "embedding_status": m.entry.embedding_status,
            }
            for m in finished.memories
        ]
    return runs, injected, captured


async def run_demo() -> dict[str, Any]:
    """The tour on a throwaway database with the offline embedder, whatever is configured."""
    with tempfile.TemporaryDirectory(prefix="devstream-demo-") as folder:
        settings = Settings(db=str(Path(folder) / "demo.db"))
        async with DevStream.open(settings) as ds:
            return await tour(ds)
