"""Figures about the store that outlive any one process: work done, time taken, context used."""

from __future__ import annotations

from devstream.db import memory_store, task_store
from devstream.db.pool import ConnectionPool
from devstream.metrics import LatencyDistribution


async def store_figures(pool: ConnectionPool) -> dict[str, object]:
    async with pool.read_transaction() as conn:
        statuses = await task_store.status_counts(conn)
        transitions = await task_store.transition_counts(conn)
        durations = await task_store.durations(conn)
        injections, tokens = await task_store.injection_totals(conn)
        memories = await memory_store.counts(conn)
    return {
        "plans": statuses["plans"],
        "tasks": statuses["tasks"],
        "transitions": transitions,
        "task_durations_s": _distribution(durations),
        "context": {"injections": injections, "tokens_injected": tokens},
        "memories": memories,
    }


def _distribution(samples: list[float]) -> dict[str, float]:
    """Seconds, with the percentiles every DevStream latency uses (nearest rank)."""
    if not samples:
        return {"count": 0}
    runs = LatencyDistribution(window=len(samples))
    for seconds in samples:
        runs.observe(seconds)
    summary = runs.summary()
    in_seconds = {
        name: getattr(summary, f"{name}_ms") / 1000 for name in ("mean", "p50", "p95", "p99", "max")
    }
    return {"count": summary.count, **in_seconds}
