"""Benchmark plumbing: each benchmark drives its own loop, and figures are reported together.

pytest-benchmark times synchronous callables, so benchmarks run coroutines on a loop of
their own (the kind `--loop` chose) against database files of their own, never the shared
worker database; the pollution guard therefore has nothing to watch here. Every figure is
collected and printed side by side, with its target and whether it was met, at the end of
the run, and written as JSON to the file that DEVSTREAM_BENCHMARK_JSON names, if set (`nox -s
benchmark` sets it and compares the file with the baseline: ci/benchcheck.py), together
with the calibration figure those comparisons divide by. Timings are not asserted (shared
machines are noisy); correctness is: counts, errors, lost entries.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from ci.benchcheck import CALIBRATION
from devstream import DevStream, Settings
from devstream.db import migrate
from devstream.db.pool import ConnectionPool
from devstream.memory.service import NewMemory
from tests.conftest import loop_factory, requested_loop
from tests.integration.benchmarks.calibration import CHECKSUM, ROUNDS_PER_BENCHMARK, workload
from tests.integration.benchmarks.corpus import Corpus

T = TypeVar("T")

RESULT_ENV = "DEVSTREAM_BENCHMARK_JSON"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    target: str
    met: bool | None  # None: reported only


FIGURES: list[Figure] = []
CALIBRATION_ROUNDS_S: list[float] = []


def record(name: str, value: float, unit: str, target: str = "", met: bool | None = None) -> None:
    FIGURES.append(Figure(name, value, unit, target, met))


def median_s(benchmark: BenchmarkFixture) -> float:
    """The median round of a benchmark that has run, in seconds."""
    stats = benchmark.stats
    assert stats is not None, "the benchmark ran"
    return float(stats.stats.median)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    calibration_ms = statistics.median(CALIBRATION_ROUNDS_S) * 1000
    FIGURES.insert(0, Figure(CALIBRATION, calibration_ms, "ms", "", None))
    terminalreporter.section("DevStream benchmark figures")
    for figure in FIGURES:
        verdict = {True: "met", False: "MISSED", None: "reported"}[figure.met]
        target = f"  target {figure.target}" if figure.target else ""
        terminalreporter.write_line(
            f"{figure.name:<58} {figure.value:>12,.3f} {figure.unit:<10}{target}  [{verdict}]"
        )
    missed = [figure.name for figure in FIGURES if figure.met is False]
    met = sum(figure.met is True for figure in FIGURES)
    terminalreporter.write_line(f"targets met: {met}; missed: {len(missed)}")
    if result := os.environ.get(RESULT_ENV):
        write_figures(Path(result))
        terminalreporter.write_line(f"figures written to {result}")


def write_figures(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "python": platform.python_version(),
        "figures": [asdict(figure) for figure in FIGURES],
    }
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


@pytest.fixture(autouse=True)
def integration_pollution_guard() -> None:
    """Benchmarks use files of their own; the shared worker database is never touched."""


@pytest.fixture(autouse=True)
def calibration_rounds() -> None:
    """Rounds of the calibration workload before each benchmark. Its figure is the median of
    them all, so it sees the machine as the whole run did: other work starts and stops
    during a run, and rounds taken at its start alone once came out 1.6x slower than the
    rest of that run warranted."""
    for _ in range(ROUNDS_PER_BENCHMARK):
        started = time.perf_counter()
        checksum = workload()
        CALIBRATION_ROUNDS_S.append(time.perf_counter() - started)
        assert checksum == CHECKSUM, "the calibration workload changed: refresh the baseline"


@pytest.fixture(scope="session")
def child_env() -> dict[str, str]:
    """The environment fresh `devstream` processes run in: this one without DEVSTREAM_* or
    coverage variables, and with no config file (so a user's cannot name an Ollama
    server)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DEVSTREAM_", "COV_CORE_", "COVERAGE_"))
    }
    env["DEVSTREAM_CONFIG"] = os.devnull
    return env


@pytest.fixture(scope="session")
def bench_loop(pytestconfig: pytest.Config) -> Iterator[asyncio.AbstractEventLoop]:
    loop = loop_factory(requested_loop(pytestconfig))()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def run(bench_loop: asyncio.AbstractEventLoop) -> Callable[[Awaitable[T]], T]:
    """Run a coroutine to completion on the benchmark loop."""
    return bench_loop.run_until_complete


async def create_migrated(path: Path) -> None:
    pool = ConnectionPool.create(Settings(db=str(path)))
    try:
        await migrate.upgrade(pool)
    finally:
        await pool.close()


@pytest.fixture(scope="session")
def bench_template(
    tmp_path_factory: pytest.TempPathFactory, run: Callable[[Awaitable[None]], None]
) -> Path:
    path = tmp_path_factory.mktemp("bench") / "template.db"
    run(create_migrated(path))
    return path


@pytest.fixture
def bench_store(bench_db: Path, run: Callable[[Awaitable[Any]], Any]) -> Iterator[DevStream]:
    """A DevStream open on `bench_db` with a real pool, closed after the benchmark."""
    opened = DevStream.open(Settings(db=str(bench_db)), migrate_schema=False)
    ds = run(opened.__aenter__())
    yield ds
    run(opened.__aexit__(None, None, None))


@pytest.fixture
def bench_db(bench_template: Path, tmp_path: Path) -> Path:
    """A fresh migrated database file with production pragmas (set on every connection)."""
    path = tmp_path / "bench.db"
    shutil.copyfile(bench_template, path)
    return path


@pytest.fixture(scope="session")
def corpora(
    tmp_path_factory: pytest.TempPathFactory, run: Callable[[Awaitable[None]], None]
) -> Callable[[int], Path]:
    """Database files holding the seeded corpus at a given size, built on first use.

    They are shared by every benchmark of the session: read them, or copy them before
    writing (only the index cache beside a file may come and go).
    """
    built: dict[int, Path] = {}

    async def build(size: int, path: Path) -> None:
        entries = Corpus().entries(size)
        async with DevStream.open(Settings(db=str(path))) as ds:
            for start in range(0, size, 5_000):
                await ds.memory.store_many(
                    [
                        NewMemory(content, "documentation")
                        for content in entries[start : start + 5_000]
                    ]
                )

    def corpus(size: int) -> Path:
        if size not in built:
            path = tmp_path_factory.mktemp("corpus") / f"corpus-{size}.db"
            run(build(size, path))
            built[size] = path
        return built[size]

    return corpus
