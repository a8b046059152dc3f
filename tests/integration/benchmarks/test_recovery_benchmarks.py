"""Error recovery times: an embedding outage and a crashed writer.

Run with `pytest tests/integration/ --benchmark-only` (or `nox -s benchmark`); no xdist.
Timings are reported; what recovery must achieve (everything embedded, nothing committed
lost) is asserted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pytest_benchmark.fixture import BenchmarkFixture
from sqlalchemy import text

from devstream import DevStream, Settings
from devstream.db.pool import ConnectionPool
from devstream.memory.breaker import CircuitBreaker
from devstream.memory.ollama import OllamaEmbedder
from devstream.memory.service import NewMemory
from devstream.testing import FakeOllama
from tests.integration.benchmarks.conftest import median_s, record
from tests.support import REPO_ROOT, repo_pythonpath

Run = Callable[[Awaitable[Any]], Any]

OUTAGE_ENTRIES = 500
CRASH_ENTRIES = 1_000  # committed by the writer before it is killed


def _notes(label: str, count: int) -> list[NewMemory]:
    return [
        NewMemory(f"{label} note {n}: what the outage taught", "learning") for n in range(count)
    ]


def test_recovery_from_an_embedding_outage(
    benchmark: BenchmarkFixture, bench_db: Path, run: Run
) -> None:
    """Entries stored while Ollama is down, then the time from its return until every one is
    embedded and search answers with vectors again."""
    with FakeOllama() as server:
        embedder = OllamaEmbedder(
            server.url,
            attempts=2,
            backoff_initial_s=0.001,
            backoff_max_s=0.005,
            timeout_s=2.0,
            breaker=CircuitBreaker(failure_threshold=2, cooldown_s=0.05),
        )
        settings = Settings(db=str(bench_db))
        ds = DevStream(settings, ConnectionPool.create(settings), embedder)

        async def store_in_batches(label: str) -> float:
            started = time.perf_counter()
            for batch in range(0, OUTAGE_ENTRIES, 50):
                await ds.memory.store_many(_notes(f"{label}-{batch}", 50))
            return time.perf_counter() - started

        healthy_s = run(store_in_batches("healthy"))
        server.refuse()
        down_s = run(store_in_batches("down"))
        assert run(ds.memory.waiting()) == OUTAGE_ENTRIES
        server.recover()
        time.sleep(0.06)  # the breaker's cool-down: the first call after it probes

        async def recover() -> None:
            report = await ds.memory.backfill()
            assert (report.embedded, report.remaining) == (OUTAGE_ENTRIES, 0)
            result = await ds.memory.search("what the outage taught")
            assert not result.degraded

        benchmark.pedantic(lambda: run(recover()), rounds=1, iterations=1)
        run(embedder.aclose())
        run(ds.pool.close())
    recovery_s = median_s(benchmark)
    record("outage: store 500 entries, Ollama healthy", healthy_s * 1000, "ms")
    record("outage: store 500 entries, Ollama down (pending)", down_s * 1000, "ms")
    record("outage: store time down / healthy (fails fast)", down_s / healthy_s, "x")
    record("outage recovery: backfill 500 + first full search", recovery_s * 1000, "ms")
    record("outage recovery: entries embedded per second", OUTAGE_ENTRIES / recovery_s, "entries/s")


def test_recovery_from_a_crashed_writer(
    benchmark: BenchmarkFixture, bench_db: Path, run: Run
) -> None:
    """A writer killed mid-write; the time until a fresh process serves searches again
    (open, WAL recovery, integrity check, index load) with everything it committed."""
    committed = run(_crash_a_writer(bench_db))

    async def reopen() -> int:
        async with DevStream.open(Settings(db=str(bench_db)), migrate_schema=False) as ds:
            async with ds.pool.read_transaction() as conn:
                assert await conn.scalar(text("PRAGMA integrity_check")) == "ok"
            assert (await ds.memory.search("power cut")).hits
            stored = {entry.id for entry in await ds.memory.entries(limit=None)}
        assert set(committed) <= stored
        return len(stored)

    stored = benchmark.pedantic(lambda: run(reopen()), rounds=1, iterations=1)
    assert stored >= CRASH_ENTRIES
    record(
        f"crash recovery: reopen, check and search {stored:,} entries",
        median_s(benchmark) * 1000,
        "ms",
        "nothing committed lost",
        True,
    )


async def _crash_a_writer(db: Path) -> list[int]:
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.memory_writer",
        str(db),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": repo_pythonpath()},
        cwd=REPO_ROOT,
    )
    assert writer.stdout is not None
    committed: list[int] = []
    while len(committed) < CRASH_ENTRIES:
        line = await asyncio.wait_for(writer.stdout.readline(), 60)
        assert line, "the writer stopped on its own"
        committed.extend(int(entry_id) for entry_id in line.split())
    writer.send_signal(signal.SIGKILL)
    await writer.wait()
    return committed
