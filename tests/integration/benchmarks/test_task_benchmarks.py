"""Workflow benchmarks: parallel task executions, a whole plan end to end, each step's latency.

Run with `pytest tests/integration/ --benchmark-only` (or `nox -s benchmark`); no xdist.
Every task run starts with context assembly and injection and completes with its output
captured as memory; correctness is asserted (no errors, each output captured once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pytest_benchmark.fixture import BenchmarkFixture
from sqlalchemy import text

from devstream import DevStream
from devstream.memory.service import NewMemory
from tests.integration.benchmarks.conftest import median_s, record

Run = Callable[[Awaitable[Any]], Any]

PARALLEL_TASKS = 200
STEPS = ("workflow.start", "memory.assemble", "workflow.complete", "memory.store")


async def _seed_memories(ds: DevStream, count: int) -> None:
    await ds.memory.store_many(
        [
            NewMemory(
                f"lesson {n}: step {n % 30} of the rollout needs a migration check", "learning"
            )
            for n in range(count)
        ]
    )


async def _scalar(ds: DevStream, sql: str) -> int:
    async with ds.pool.read_transaction() as conn:
        return int(await conn.scalar(text(sql)) or 0)


async def _execute(ds: DevStream, task_id: int) -> None:
    await ds.workflow.start_task(task_id, budget=500)
    await ds.workflow.complete_task(task_id, f"output of task {task_id}: rollout step done")


def test_two_hundred_parallel_task_executions(
    benchmark: BenchmarkFixture, bench_store: DevStream, run: Run
) -> None:
    """200 independent tasks started and completed at once on a real pool."""
    ds = bench_store

    async def prepare() -> list[int]:
        await _seed_memories(ds, 500)
        plan = await ds.tasks.create_plan("Parallel rollout")
        phase = await ds.tasks.add_phase(plan.id, "Roll out")
        return [
            (await ds.tasks.add_task(phase.id, f"Roll out step {n}", f"step {n % 30}")).id
            for n in range(PARALLEL_TASKS)
        ]

    task_ids: list[int] = run(prepare())

    async def all_at_once() -> list[BaseException]:
        outcomes = await asyncio.gather(
            *(_execute(ds, task_id) for task_id in task_ids), return_exceptions=True
        )
        return [o for o in outcomes if isinstance(o, BaseException)]

    errors = benchmark.pedantic(lambda: run(all_at_once()), rounds=1, iterations=1)
    assert errors == []
    captured = run(_scalar(ds, "SELECT count(*) FROM memory_entries WHERE content_type = 'output'"))
    distinct = run(
        _scalar(
            ds, "SELECT count(DISTINCT task_id) FROM memory_entries WHERE content_type = 'output'"
        )
    )
    assert (captured, distinct) == (PARALLEL_TASKS, PARALLEL_TASKS)  # each exactly once
    assert run(_scalar(ds, "SELECT count(*) FROM context_injections")) == PARALLEL_TASKS
    assert run(_scalar(ds, "SELECT count(*) FROM micro_tasks WHERE status = 'completed'")) == (
        PARALLEL_TASKS
    )
    seconds = median_s(benchmark)
    record(
        "200 parallel task executions (start + complete)",
        seconds * 1000,
        "ms",
        "0 errors, each output captured once",
        True,
    )
    record("200 parallel task executions: throughput", PARALLEL_TASKS / seconds, "tasks/s")
    # All 200 start at once, so these include waiting for the one writer.
    _record_steps(ds, "parallel", STEPS)


def test_a_three_phase_thirty_task_plan_end_to_end(
    benchmark: BenchmarkFixture, bench_store: DevStream, run: Run
) -> None:
    """Plan, phases and 30 dependent tasks created, then run in ready order to completion."""
    ds = bench_store
    run(_seed_memories(ds, 200))
    rounds = 3

    async def whole_plan() -> int:
        plan = await ds.tasks.create_plan("Thirty-task rollout")
        previous: list[int] = []
        for name in ("Prepare", "Migrate", "Verify"):
            phase = await ds.tasks.add_phase(plan.id, name)
            for n in range(10):
                task = await ds.tasks.add_task(
                    phase.id, f"{name} step {n}", f"step {n} of {name}", depends_on=previous
                )
                previous = [task.id]
        ran = 0
        while ready := await ds.tasks.ready(plan_id=plan.id, limit=1):
            await _execute(ds, ready[0].id)
            ran += 1
        await ds.tasks.set_plan_status(plan.id, "completed")
        return ran

    ran = benchmark.pedantic(lambda: run(whole_plan()), rounds=rounds, iterations=1)
    assert ran == 30
    assert run(
        _scalar(ds, "SELECT count(*) FROM intervention_plans WHERE status = 'completed'")
    ) == (rounds)
    record("3-phase, 30-task plan end to end (median)", median_s(benchmark) * 1000, "ms")
    _record_steps(ds, "30-task plan", (*STEPS, "task.duration"))


def _record_steps(ds: DevStream, label: str, steps: tuple[str, ...]) -> None:
    for step in steps:
        summary = ds.metrics.latencies[step].summary()
        record(f"{label}: {step} p50", summary.p50_ms, "ms")
        record(f"{label}: {step} p99", summary.p99_ms, "ms")
