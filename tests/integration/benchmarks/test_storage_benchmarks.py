"""Storage benchmarks: isolation overhead, write throughput, per-operation latency.

Run with `pytest tests/integration/ --benchmark-only` (or `nox -s benchmark`); no xdist.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture
from sqlalchemy import func, insert, select

from devstream import DevStream, Settings, transfer
from devstream.db import schema
from devstream.db.pool import ConnectionPool
from tests.integration.benchmarks.conftest import create_migrated, median_s, record

Run = Callable[[Awaitable[Any]], Any]

SEAM_TARGET_MS = 2.0
SEAM_TARGET_RATIO = 50.0
P99_BAR_MS = 500.0
WRITES_PER_ROUND = 200
FRESH_ROUNDS = 15
SEAM_ROUNDS = 300
LATENCY_ROUNDS = 50


def test_isolation_seam_vs_fresh_database(
    benchmark: BenchmarkFixture, bench_db: Path, tmp_path: Path, run: Run
) -> None:
    """Per-test isolation cost, side by side in one run.

    seam cycle: the seam begins, a small write runs inside it, everything rolls back.
    plain write: the same write through the same pool with no isolation; timed in pairs
    with the seam cycle, so machine noise hits both alike. The seam's overhead is the
    difference. The alternative's overhead is a fresh database migrated to head.
    """
    pool = ConnectionPool.create(Settings(db=str(bench_db)))

    async def small_write() -> None:
        async with pool.write_transaction() as conn:
            await conn.execute(insert(schema.intervention_plans).values(title="bench"))

    async def seam_cycle() -> None:
        async with pool.isolated():
            await small_write()

    async def plans() -> int:
        async with pool.read_transaction() as conn:
            return int(
                await conn.scalar(select(func.count()).select_from(schema.intervention_plans)) or 0
            )

    overheads = []
    try:
        benchmark.pedantic(lambda: run(seam_cycle()), rounds=SEAM_ROUNDS, warmup_rounds=20)
        assert run(plans()) == 0  # every seam cycle rolled its write back
        for _ in range(SEAM_ROUNDS):
            overheads.append(_seconds(run, seam_cycle) - _seconds(run, small_write))
        assert run(plans()) == SEAM_ROUNDS  # only the plain writes stayed
    finally:
        run(pool.close())
    fresh_ms = 1000 * statistics.median(
        _seconds(run, functools.partial(create_migrated, tmp_path / f"f{n}.db"))
        for n in range(FRESH_ROUNDS)
    )
    seam_ms = median_s(benchmark) * 1000
    overhead_ms = 1000 * statistics.median(overheads)
    ratio = fresh_ms / overhead_ms

    record(
        "isolation: seam cycle (begin + write + rollback)",
        seam_ms,
        "ms",
        f"<= {SEAM_TARGET_MS:g} ms",
        seam_ms <= SEAM_TARGET_MS,
    )
    record("isolation: seam overhead over the bare write", overhead_ms, "ms")
    record("isolation: fresh migrated database", fresh_ms, "ms")
    record(
        "isolation: fresh database / seam overhead",
        ratio,
        "x",
        f">= {SEAM_TARGET_RATIO:g}x",
        ratio >= SEAM_TARGET_RATIO,
    )
    record("isolation: fresh database / whole seam cycle", fresh_ms / seam_ms, "x")


def _seconds(run: Run, make: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    run(make())
    return time.perf_counter() - started


@pytest.mark.parametrize("table", ["memory_entries", "intervention_plans"])
def test_single_row_write_throughput(
    benchmark: BenchmarkFixture, bench_store: DevStream, run: Run, table: str
) -> None:
    """One commit per row through the repository, on a file with production pragmas;
    memory rows also feed the FTS index through its triggers."""
    ds = bench_store

    async def write_many(ds: DevStream) -> None:
        for n in range(WRITES_PER_ROUND):
            if table == "memory_entries":
                await ds.queries.memories.create(
                    content=f"note {n}: the writer commits each entry on its own",
                    content_type="learning",
                )
            else:
                await ds.queries.plans.create(title=f"plan {n}")

    benchmark.pedantic(lambda: run(write_many(ds)), rounds=5, warmup_rounds=1)
    repository = ds.queries.memories if table == "memory_entries" else ds.queries.plans
    assert run(repository.count()) == WRITES_PER_ROUND * 6
    rate = WRITES_PER_ROUND / median_s(benchmark)
    record(f"write throughput: {table}, 1 commit/row", rate, "rows/s")


def test_repository_operation_latency(
    benchmark: BenchmarkFixture, bench_store: DevStream, run: Run
) -> None:
    """p99 of every repository operation over a mixed workload; the seed's bar is 500 ms."""
    ds = bench_store

    async def workload(ds: DevStream) -> None:
        q = ds.queries
        plan = await q.plans.create(title="latency")
        phase = await q.phases.create(plan_id=plan.id, name="p", position=0)
        first = await q.tasks.create(phase_id=phase.id, title="first")
        second = await q.tasks.create(phase_id=phase.id, title="second")
        await q.dependencies.create(second.id, first.id)
        memory = await q.memories.create(
            content="latency probe", content_type="context", task_id=first.id
        )
        for _ in range(5):
            await q.plans.get(plan.id)
            await q.tasks.list(phase_id=phase.id)
            await q.memories.get(memory.id)
            await q.dependencies.list(task_id=second.id)
        await q.tasks.update(first.id, status="active")
        await q.memories.update(memory.id, keywords="probe")
        await q.dependencies.delete(second.id, first.id)
        await q.plans.delete(plan.id)
        await q.memories.delete(memory.id)

    benchmark.pedantic(lambda: run(workload(ds)), rounds=LATENCY_ROUNDS, warmup_rounds=2)
    latencies = ds.metrics.latencies
    runs = LATENCY_ROUNDS + 2
    assert latencies["repo.plan.get"].count == 5 * runs
    assert latencies["repo.dependency.delete"].count == runs
    assert ds.metrics.counters == {}  # no operation failed
    for name, dist in sorted(latencies.items()):
        p99 = dist.summary().p99_ms
        record(f"p99 {name}", p99, "ms", f"< {P99_BAR_MS:g} ms", p99 < P99_BAR_MS)


IMPORT_TARGET_S = 30.0
IMPORT_SIZE = 100_000


def test_export_and_import_of_100k_memories(
    benchmark: BenchmarkFixture,
    corpora: Callable[[int], Path],
    bench_db: Path,
    tmp_path: Path,
    run: Run,
) -> None:
    """The 100k corpus exported with its vectors, then imported into an empty store: what
    moving a store to another costs (each timed once: the import needs an empty store)."""
    exported = tmp_path / "export.jsonl"
    corpus = corpora(IMPORT_SIZE)  # built on first use, in the benchmarks' own loop

    async def export() -> float:
        async with DevStream.open(Settings(db=str(corpus)), migrate_schema=False) as ds:
            started = time.perf_counter()
            with exported.open("w", encoding="utf-8") as out:
                await transfer.export(ds, out, embeddings=True)
            return time.perf_counter() - started

    async def load() -> tuple[float, transfer.ImportReport]:
        async with DevStream.open(Settings(db=str(bench_db)), migrate_schema=False) as ds:
            started = time.perf_counter()
            with exported.open(encoding="utf-8") as source:
                report = await transfer.import_(ds, source)
            return time.perf_counter() - started, report

    export_s = run(export())
    import_s, report = benchmark.pedantic(lambda: run(load()), rounds=1, iterations=1)
    assert report.added["memory"] == IMPORT_SIZE
    size_mb = exported.stat().st_size / 2**20
    record(
        f"export {IMPORT_SIZE // 1000}k memories with vectors ({size_mb:,.0f} MB)", export_s, "s"
    )
    record(
        f"import {IMPORT_SIZE // 1000}k memories with vectors",
        import_s,
        "s",
        f"<= {IMPORT_TARGET_S:g} s",
        import_s <= IMPORT_TARGET_S,
    )
    record(f"import {IMPORT_SIZE // 1000}k: rate", IMPORT_SIZE / import_s, "memories/s")
