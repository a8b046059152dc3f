"""PostgreSQL benchmarks, side by side with SQLite in the same run: a store moved in by import,
hybrid search in the database over the Zipf corpus (common words included), warm and by a
fresh `devstream` process, and writer processes on one store.

The server is the run's PostgreSQL (`DEVSTREAM_TEST_PG_URL`, or the throwaway one of
tests/postgres.py); each benchmark makes databases of its own and drops them.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from devstream import DevStream, Settings, transfer
from tests import postgres
from tests.integration.benchmarks.conftest import record
from tests.integration.benchmarks.corpus import Corpus
from tests.integration.benchmarks.fresh_process import (
    Measured,
    check_search,
    common_queries,
    measure,
    record_cli_searches,
    search_command,
)
from tests.support import started_together

Run = Callable[[Awaitable[Any]], Any]

SEARCH_P50_TARGET_MS = {100_000: 50.0}
RECALL_TARGET = 0.95
ROUNDS = 3
QUERIES = 100
CLI_RUNS = 5
WRITER_COUNTS = (1, 2, 4, 8)
WRITES_PER_WRITER = 200
THROUGHPUT_RATIO_TARGET = 1.5  # PostgreSQL over SQLite, 8 writers
PROCESS_TIMEOUT_S = 300.0


@pytest.fixture(scope="session")
def pg_server() -> str:
    return postgres.server_url()


@asynccontextmanager
async def pg_database(server: str, prefix: str) -> AsyncIterator[str]:
    """A new, empty database of its own (migrated on first open); dropped afterwards."""
    name = postgres.unique_name(prefix)
    admin = await postgres.maintenance(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield postgres.database_url(server, name)
    finally:
        await postgres.drop(server, name)


async def _moved_in(corpus: Path, url: str, exported: Path) -> tuple[float, int]:
    """The SQLite corpus exported with its vectors and imported into `url`: the import's
    seconds and memories."""
    async with DevStream.open(Settings(db=str(corpus)), migrate_schema=False) as source:
        with exported.open("w", encoding="utf-8") as out:
            await transfer.export(source, out, embeddings=True)
    async with DevStream.open(Settings(db=url)) as target:
        started = time.perf_counter()
        with exported.open(encoding="utf-8") as lines:
            report = await transfer.import_(target, lines)
        return time.perf_counter() - started, report.added["memory"]


async def _search_figures(url: str) -> dict[str, Any]:
    queries = Corpus().queries()[:QUERIES]
    async with DevStream.open(Settings(db=url), migrate_schema=False) as ds:
        started = time.perf_counter()
        await ds.memory.search(queries[0])  # makes the model's HNSW index
        index_s = time.perf_counter() - started
        rounds: list[list[float]] = []
        found: dict[str, list[int]] = {}
        for _ in range(ROUNDS):
            rounds.append([])
            for query in queries:
                started = time.perf_counter()
                result = await ds.memory.search(query)
                rounds[-1].append(time.perf_counter() - started)
                found[query] = [hit.entry.id for hit in result.hits]
        exact = {
            query: [hit.entry.id for hit in (await ds.memory.search(query, exact=True)).hits]
            for query in queries
        }
    shares = [len(set(ids) & set(found[q])) / len(ids) for q, ids in exact.items() if ids]
    return {
        "index_s": index_s,
        "p50_ms": min(statistics.median(r) for r in rounds) * 1000,
        "recall": statistics.mean(shares),
    }


async def _cli_searches(url: str, env: Mapping[str, str]) -> list[Measured]:
    """CLI_RUNS searches, each by a new `devstream` process, through the common-word queries."""
    queries = common_queries()
    runs = []
    for n in range(CLI_RUNS):
        what = f"`devstream memory search {queries[n % len(queries)]!r}` on PostgreSQL"
        command = search_command(url, queries[n % len(queries)])
        measured = await asyncio.to_thread(measure, command, env, what)
        check_search(measured, what)
        runs.append(measured)
    return runs


@pytest.mark.parametrize("size", [10_000, 100_000], ids=["10k", "100k"])
def test_postgresql_import_and_hybrid_search(
    benchmark: BenchmarkFixture,
    corpora: Callable[[int], Path],
    pg_server: str,
    child_env: dict[str, str],
    tmp_path: Path,
    run: Run,
    size: int,
) -> None:
    """The corpus moved into PostgreSQL by export and import, then searched there: the first
    search makes the HNSW index; then warm p50 (best of ROUNDS) and recall@10 against
    PostgreSQL's own exact search (every vector scored, the same fusion); then searches by
    fresh processes, whole-process wall time and peak RSS, against SQLite's targets."""
    corpus = corpora(size)

    async def measure_all() -> dict[str, Any]:
        async with pg_database(pg_server, "devstream_bench_search") as url:
            import_s, memories = await _moved_in(corpus, url, tmp_path / "export.jsonl")
            searched = await _search_figures(url)
            cli = await _cli_searches(url, child_env)
            return {"import_s": import_s, "memories": memories, "cli": cli, **searched}

    figures = benchmark.pedantic(lambda: run(measure_all()), rounds=1, iterations=1)
    assert figures["memories"] == size
    label = f"postgresql {size // 1000}k"
    record(f"{label}: import with vectors", figures["import_s"], "s")
    record(f"{label}: import rate", size / figures["import_s"], "memories/s")
    record(f"{label}: HNSW index made by the first search", figures["index_s"], "s")
    target = SEARCH_P50_TARGET_MS.get(size)
    record(
        f"{label}: hybrid search p50",
        figures["p50_ms"],
        "ms",
        f"<= {target:g} ms" if target else "",
        None if target is None else figures["p50_ms"] <= target,
    )
    record(
        f"{label}: recall@10 vs exact",
        figures["recall"],
        "",
        f">= {RECALL_TARGET}",
        figures["recall"] >= RECALL_TARGET,
    )
    record_cli_searches(f"{label}: cli search in a fresh process", figures["cli"], size)


@dataclass(frozen=True)
class _Wrote:
    storing_s: float  # from "go" until the last writer had stored and closed the store
    exiting_s: float  # from "go" until the last writer exited


async def _writers(db: str, count: int) -> _Wrote:
    """`count` processes each storing WRITES_PER_WRITER memories, one `store` call each,
    started together."""
    module = "tests.integration.benchmarks.store_writer"
    writers = [[module, db, str(WRITES_PER_WRITER), f"writer-{n}", "--go"] for n in range(count)]
    ran = await started_together(writers, PROCESS_TIMEOUT_S)
    last_store = max(float(output.split()[1]) for output in ran.outputs)
    return _Wrote(last_store - ran.went, ran.elapsed)


async def _stored(db: str) -> int:
    async with DevStream.open(Settings(db=db), migrate_schema=False) as ds:
        return len(await ds.memory.entries(limit=None))


def test_writer_processes_postgresql_against_sqlite(
    benchmark: BenchmarkFixture, pg_server: str, bench_db: Path, tmp_path: Path, run: Run
) -> None:
    """1, 2, 4 and 8 processes each making WRITES_PER_WRITER `store` calls (the offline
    embedder, unique contents) on a fresh store of each backend: throughput, 0 errors, every
    row present. Throughput counts until the last writer has stored and closed its store;
    the rate until the last one exited (its interpreter's teardown, about 80 ms of CPU a
    process here, included) is reported beside it."""

    async def measure_rates() -> dict[tuple[str, int], _Wrote]:
        rates: dict[tuple[str, int], _Wrote] = {}
        for count in WRITER_COUNTS:
            sqlite_db = tmp_path / f"writers-{count}.db"
            await asyncio.to_thread(shutil.copyfile, bench_db, sqlite_db)
            async with pg_database(pg_server, "devstream_bench_writers") as url:
                async with DevStream.open(Settings(db=url)):
                    pass  # migrated before the writers open it
                for backend, db in (("sqlite", str(sqlite_db)), ("postgresql", url)):
                    rates[backend, count] = await _writers(db, count)
                    assert await _stored(db) == count * WRITES_PER_WRITER
        return rates

    wrote = benchmark.pedantic(lambda: run(measure_rates()), rounds=1, iterations=1)
    rates = {key: key[1] * WRITES_PER_WRITER / times.storing_s for key, times in wrote.items()}
    for (backend, count), times in sorted(wrote.items()):
        name = f"{backend}: {count} writer processes x {WRITES_PER_WRITER} stores"
        record(name, rates[backend, count], "stores/s")
        record(f"{name}, until exited", count * WRITES_PER_WRITER / times.exiting_s, "stores/s")
    ratio = rates["postgresql", 8] / rates["sqlite", 8]
    record(
        "8 writer processes: postgresql / sqlite throughput",
        ratio,
        "x",
        f">= {THROUGHPUT_RATIO_TARGET:g}x",
        ratio >= THROUGHPUT_RATIO_TARGET,
    )
