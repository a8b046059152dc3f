"""Figures about the store that outlive any one process: work done, time taken, context used."""

from __future__ import annotations

import numpy as np

from devstream.db import memory_store, task_store
from devstream.db.pool import ConnectionPool


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
    if not samples:
        return {"count": 0}
    p50, p95, p99 = np.percentile(samples, [50, 95, 99])
    return {
        "count": len(samples),
        "mean": float(np.mean(samples)),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": max(samples),
    }
