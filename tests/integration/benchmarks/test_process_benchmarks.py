"""Process benchmarks: what a user waits for when a fresh `devstream` process starts, and what
a long-lived searcher sees while other processes write.

Run with `pytest tests/integration/ --benchmark-only` (or `nox -s benchmark`); no xdist.
Fresh processes are measured as `fresh_process.py` says: whole-process wall time and peak
RSS, in a clean environment (the offline hashing embedder). Every search uses common-word
queries, whose long posting lists are the case users hit. Timings are reported against
their targets; exit codes, hits, stored rows and errors are asserted.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import string
import time
from asyncio.subprocess import Process
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp
import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture
from sqlalchemy import text

from devstream import DevStream, Settings
from devstream.mcp import build_server
from devstream.memory import MemoryFilter
from devstream.memory.follow import Followed
from devstream.vocabulary import BRIEF_MAX_CHARS
from tests.integration.benchmarks.conftest import record
from tests.integration.benchmarks.fresh_process import (
    CONSOLE_SCRIPT,
    PROCESS_TIMEOUT_S,
    PYTHON,
    Measured,
    check_search,
    common_queries,
    mb,
    measure,
    record_cli_searches,
    record_walls,
    search_command,
)
from tests.support import REPO_ROOT, repo_pythonpath

Run = Callable[[Awaitable[Any]], Any]

RUNS = 5  # of each fresh-process measurement, and of each catch-up
WRITERS_TIMEOUT_S = 300.0

COLD_SEARCH_TARGET_S = 5.0
VERSION_TARGET_S = 0.2
TASK_READY_TARGET_S = 0.8
WRITERS, WRITES_PER_WRITER = 8, 200
SEARCH_UNDER_WRITES_MAX_TARGET_MS = 500.0
CATCH_UP_TARGET_MS = 20.0
SESSION_START_TARGET_S = 1.0
CAPTURE_HOOK_TARGET_S = 1.0
CORE_TOOLS_TARGET_CHARS = 8_000
LIMIT = 10


def index_cache(db: Path) -> Path:
    """The persisted index cache beside a database file (once it exists)."""
    return Path(str(db) + "-index")


def copy_database(source: Path, directory: Path) -> Path:
    """A copy of a closed database file, with its WAL and index cache when they exist."""
    target = directory / source.name
    for suffix in ("", "-wal", "-index"):
        if Path(str(source) + suffix).exists():
            shutil.copyfile(str(source) + suffix, str(target) + suffix)
    return target


def _label(size: int) -> str:
    return f"{size // 1000}k"


# --- fresh processes ----------------------------------------------------------------------


def _searches(
    benchmark: BenchmarkFixture,
    db: Path,
    env: Mapping[str, str],
    what: str,
    setup: Callable[[], None] | None = None,
) -> list[Measured]:
    """RUNS fresh-process searches, through the queries in turn (`setup` before each)."""
    queries = common_queries()
    runs: list[Measured] = []

    def one() -> None:
        query = queries[len(runs) % len(queries)]
        runs.append(measure(search_command(db, query), env, f"{what} {query!r}"))

    benchmark.pedantic(one, setup=setup, rounds=RUNS, iterations=1)
    for measured in runs:
        check_search(measured, what)
    return runs


@pytest.mark.parametrize("size", [10_000, 100_000], ids=["10k", "100k"])
def test_cli_search_in_a_fresh_process(
    benchmark: BenchmarkFixture,
    corpora: Callable[[int], Path],
    child_env: dict[str, str],
    size: int,
) -> None:
    """`devstream memory search --json` in a new process, the index cache already written by
    an earlier search: whole-process wall time and peak RSS."""
    db = corpora(size)
    what = f"`devstream memory search` on {_label(size)}"
    index_cache(db).unlink(missing_ok=True)  # a known state: the warm-up writes it
    warm_up = measure(search_command(db, common_queries()[0]), child_env, f"{what} (warm-up)")
    check_search(warm_up, f"{what} (warm-up)")
    state = "cache present" if index_cache(db).exists() else "no cache file"
    runs = _searches(benchmark, db, child_env, what)
    record_cli_searches(f"cli search {_label(size)} ({state})", runs, size)


def test_cli_search_100k_without_an_index_cache(
    benchmark: BenchmarkFixture, corpora: Callable[[int], Path], child_env: dict[str, str]
) -> None:
    """The same at 100k with the cache deleted before each run: the index built from nothing,
    and the cache written again."""
    db = corpora(100_000)
    cache = index_cache(db)
    runs = _searches(
        benchmark,
        db,
        child_env,
        "`devstream memory search` on 100k without a cache",
        setup=lambda: cache.unlink(missing_ok=True),
    )
    name = "cli search 100k (cache deleted)"
    record_walls(name, runs, COLD_SEARCH_TARGET_S)
    record(f"{name}: peak RSS (max of {len(runs)})", mb(max(m.maxrss_kib for m in runs)), "MB")
    assert cache.is_file(), "a search that rebuilt the index did not write the index cache"


async def _add_ready_task(ds: DevStream) -> int:
    """A ready task, worded with the corpus's common words."""
    plan = await ds.tasks.create_plan("Hook benchmark")
    phase = await ds.tasks.add_phase(plan.id, "Only phase")
    return (await ds.tasks.add_task(phase.id, common_queries()[0], common_queries()[1])).id


async def _brief_setup(db: Path) -> int:
    """A ready task to brief; the core tool list's size as MCP's list_tools serves it."""
    async with DevStream.open(Settings(db=str(db)), migrate_schema=False) as ds:
        await _add_ready_task(ds)
        async with mcp.Client(build_server(ds), raise_exceptions=True) as client:
            tools = (await client.list_tools()).tools
    listed = [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]
    return len(json.dumps(listed, separators=(",", ":")))


def test_hook_session_start_at_10k_and_the_core_tool_list(
    benchmark: BenchmarkFixture,
    corpora: Callable[[int], Path],
    child_env: dict[str, str],
    run: Run,
    tmp_path: Path,
) -> None:
    """`devstream hook session-start` as an assistant runs it (the payload on stdin), in a
    project whose store holds 10k memories and a ready task, once without the index cache
    (the first session writes it), then timed with it; and the size of the core MCP tool
    list, the other thing every session pays for."""
    db = copy_database(corpora(10_000), tmp_path)
    size = run(_brief_setup(db))
    record(
        "mcp core tool list (JSON)",
        size,
        "chars",
        f"<= {CORE_TOOLS_TARGET_CHARS:,}",
        size <= CORE_TOOLS_TARGET_CHARS,
    )
    payload = tmp_path / "session-start.json"
    event = {"session_id": "benchmark", "hook_event_name": "SessionStart", "source": "startup"}
    payload.write_text(json.dumps({**event, "cwd": str(tmp_path)}), encoding="utf-8")
    command: list[str | Path] = [CONSOLE_SCRIPT, "--db", db, "hook", "session-start"]
    runs: list[Measured] = []
    what = "`devstream hook session-start` on 10k"
    index_cache(db).unlink(missing_ok=True)  # a known state: the first session writes it
    first = measure(command, child_env, f"{what} (first, no index cache)", stdin=payload)
    assert index_cache(db).exists(), f"{what} wrote no index cache"
    record("hook session-start 10k: first, building the index cache", first.wall_s, "s")
    record("hook session-start 10k: first: peak RSS", mb(first.maxrss_kib), "MB")
    benchmark.pedantic(
        lambda: runs.append(measure(command, child_env, what, stdin=payload)),
        rounds=RUNS,
        iterations=1,
    )
    for measured in [first, *runs]:
        context = json.loads(measured.stdout)["hookSpecificOutput"]["additionalContext"]
        assert "Memories for task #" in context, f"{what} briefed no memories"
        assert len(context) <= BRIEF_MAX_CHARS
    record_walls("hook session-start 10k", runs, SESSION_START_TARGET_S)
    record(
        f"hook session-start 10k: peak RSS (max of {RUNS})",
        mb(max(m.maxrss_kib for m in runs)),
        "MB",
    )


async def _a_task_in_progress(db: Path) -> int:
    async with DevStream.open(Settings(db=str(db)), migrate_schema=False) as ds:
        return (await ds.workflow.start_task(await _add_ready_task(ds))).task.id


def test_capture_hooks_at_10k(
    benchmark: BenchmarkFixture,
    corpora: Callable[[int], Path],
    child_env: dict[str, str],
    run: Run,
    tmp_path: Path,
) -> None:
    """`devstream hook post-tool` (a file written) and `hook stop` (the turn's answer), each
    fed a payload of its own per run, with a task in progress to link to: 10k memories.
    Beside them `post-tool` after a command that succeeded, which keeps nothing: what most
    tool calls cost."""
    db = copy_database(corpora(10_000), tmp_path)
    task_id = run(_a_task_in_progress(db))
    recorded = REPO_ROOT / "tests" / "integration" / "hook_payloads"
    write = json.loads(
        (recorded / "claude_post_tool_write.json").read_text().replace("{cwd}", str(tmp_path))
    )
    answer = json.loads((recorded / "codex_stop.json").read_text().replace("{cwd}", str(tmp_path)))
    listed = json.loads((recorded / "claude_post_tool_bash_ok.json").read_text())
    measured: dict[str, list[Measured]] = {"post-tool": [], "stop": [], "post-tool, nothing": []}

    def one() -> None:
        n = len(measured["stop"])
        write["tool_input"]["content"] += f"\n# change {n}\n"
        answer["last_assistant_message"] = f"Step {n} is done: the header parser handles a BOM."
        for name, document in (
            ("post-tool", write),
            ("stop", answer),
            ("post-tool, nothing", listed),
        ):
            event = name.split(",")[0]
            fed = tmp_path / f"{event}-{n}.json"
            fed.write_text(json.dumps({**document, "cwd": str(tmp_path)}), encoding="utf-8")
            command: list[str | Path] = [CONSOLE_SCRIPT, "--db", db, "hook", event]
            measured[name].append(measure(command, child_env, f"`hook {name}`", stdin=fed))

    benchmark.pedantic(one, rounds=RUNS, iterations=1)
    kept = run(_kept_for(db, task_id))
    assert kept == 2 * RUNS, f"the hooks kept {kept} memories for the task, not {2 * RUNS}"
    for name, runs in measured.items():
        record_walls(f"hook {name} 10k", runs, CAPTURE_HOOK_TARGET_S)


async def _kept_for(db: Path, task_id: int) -> int:
    async with DevStream.open(Settings(db=str(db)), migrate_schema=False) as ds:
        return len(await ds.memory.entries(MemoryFilter(task_id=task_id), limit=None))


async def _a_few_ready_tasks(db: Path) -> list[str]:
    titles = [f"Startup benchmark task {n}" for n in range(5)]
    async with DevStream.open(Settings(db=str(db)), migrate_schema=False) as ds:
        plan = await ds.tasks.create_plan("Startup benchmark")
        phase = await ds.tasks.add_phase(plan.id, "Only phase")
        for title in titles:
            await ds.tasks.add_task(phase.id, title)
        assert len(await ds.tasks.ready()) == len(titles)
    return titles


def test_cli_startup_version_task_ready_and_the_floor(
    benchmark: BenchmarkFixture, bench_db: Path, run: Run, child_env: dict[str, str]
) -> None:
    """`devstream --version` and `devstream task ready` beside the floor under them: a bare
    interpreter, and one that imports SQLAlchemy's asyncio layer. Interleaved, RUNS rounds."""
    titles = run(_a_few_ready_tasks(bench_db))
    commands: dict[str, list[str | Path]] = {
        "devstream --version": [CONSOLE_SCRIPT, "--version"],
        "devstream task ready": [CONSOLE_SCRIPT, "--db", bench_db, "task", "ready"],
        "floor: python -c pass": [PYTHON, "-c", "pass"],
        "floor: import sqlalchemy.ext.asyncio": [PYTHON, "-c", "import sqlalchemy.ext.asyncio"],
    }
    targets = {"devstream --version": VERSION_TARGET_S, "devstream task ready": TASK_READY_TARGET_S}
    assert CONSOLE_SCRIPT.exists(), f"no console script beside the interpreter: {CONSOLE_SCRIPT}"
    runs: dict[str, list[Measured]] = {name: [] for name in commands}

    def rounds() -> None:
        for _ in range(RUNS):
            for name, command in commands.items():
                what = "`" + " ".join(str(part) for part in command) + "`"
                runs[name].append(measure(command, child_env, what))

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    for measured in runs["devstream --version"]:
        assert measured.stdout.startswith("devstream "), measured.stdout
    for measured in runs["devstream task ready"]:
        assert all(title in measured.stdout for title in titles), measured.stdout
    for name, measured_runs in runs.items():
        walls = [measured.wall_s for measured in measured_runs]
        target = targets.get(name)
        for stat, value in (("best", min(walls)), ("median", statistics.median(walls))):
            record(
                f"{name}: {stat} of {len(walls)}",
                value,
                "s",
                f"<= {target:g} s" if target else "",
                None if target is None else value <= target,
            )


# --- a long-lived searcher ----------------------------------------------------------------


async def _count(ds: DevStream) -> int:
    async with ds.pool.read_transaction() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM memory_entries")) or 0)


@dataclass
class _UnderWrites:
    latencies: list[float]
    errors: list[str]
    writers: dict[str, tuple[int | None, bytes]]  # label: exit code, stderr
    writing_s: float = 0.0  # from "go" until the last writer exited


async def _start_writers(db: Path, env: Mapping[str, str]) -> dict[str, Process]:
    """WRITERS store_writer processes, each with the store open and waiting for "go"."""
    writers: dict[str, Process] = {}
    for n in range(WRITERS):
        label = f"writer-{n}"
        writers[label] = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "tests.integration.benchmarks.store_writer",
            str(db),
            str(WRITES_PER_WRITER),
            label,
            "--go",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**env, "PYTHONPATH": repo_pythonpath()},
            cwd=REPO_ROOT,
        )
    for label, writer in writers.items():
        assert writer.stdout is not None
        try:
            line = await asyncio.wait_for(writer.stdout.readline(), PROCESS_TIMEOUT_S)
        except asyncio.TimeoutError:
            pytest.fail(f"{label} did not open the store within {PROCESS_TIMEOUT_S:g} s")
        if line.strip() != b"ready":
            assert writer.stderr is not None
            stderr = (await writer.stderr.read()).decode(errors="replace")[-1500:]
            pytest.fail(f"{label} did not get ready to write ({line!r}): {stderr}")
    return writers


async def _search_while_writing(ds: DevStream, db: Path, env: Mapping[str, str]) -> _UnderWrites:
    """Search continuously while WRITERS processes each store WRITES_PER_WRITER memories,
    from the moment they all start writing until the last one exits."""
    queries = common_queries()
    outcome = _UnderWrites([], [], {})
    stop = asyncio.Event()

    async def search_continuously() -> None:
        while not stop.is_set():
            query = queries[len(outcome.latencies) % len(queries)]
            started = time.perf_counter()
            try:
                result = await ds.memory.search(query, limit=LIMIT)
            except Exception as exc:  # every error is counted and reported
                outcome.errors.append(f"{query!r}: {exc!r}")
            else:
                if not result.hits:
                    outcome.errors.append(f"{query!r}: no hits")
            outcome.latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0)

    writers: dict[str, Process] = {}
    try:
        writers = await _start_writers(db, env)
        started = time.perf_counter()
        for writer in writers.values():
            assert writer.stdin is not None
            writer.stdin.write(b"go\n")
            writer.stdin.close()
        finishing = {label: asyncio.ensure_future(w.communicate()) for label, w in writers.items()}
        searcher = asyncio.ensure_future(search_continuously())
        await asyncio.wait(finishing.values(), timeout=WRITERS_TIMEOUT_S)
        outcome.writing_s = time.perf_counter() - started
        stop.set()
        await searcher
        unfinished = [label for label, future in finishing.items() if not future.done()]
        if unfinished:
            pytest.fail(
                f"{', '.join(unfinished)} did not finish storing {WRITES_PER_WRITER} memories "
                f"within {WRITERS_TIMEOUT_S:g} s (killed)"
            )
        for label, future in finishing.items():
            outcome.writers[label] = (writers[label].returncode, future.result()[1])
    finally:
        for writer in writers.values():
            if writer.returncode is None:
                writer.kill()
                await writer.wait()
    return outcome


def test_warm_searcher_while_eight_writers_store(
    benchmark: BenchmarkFixture,
    corpora: Callable[[int], Path],
    run: Run,
    child_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A warm DevStream on a 10k copy searching without pause while 8 other processes store
    200 memories each, one `store` call apiece: every search's latency, and nothing lost."""
    source = corpora(10_000)
    db = copy_database(source, tmp_path)

    async def session() -> tuple[int, _UnderWrites, int]:
        async with DevStream.open(Settings(db=str(db)), migrate_schema=False) as ds:
            await ds.memory.search(common_queries()[0], limit=LIMIT)  # warm
            before = await _count(ds)
            outcome = await _search_while_writing(ds, db, child_env)
            return before, outcome, await _count(ds)

    before, outcome, after = benchmark.pedantic(lambda: run(session()), rounds=1, iterations=1)
    latencies_ms = [1000 * latency for latency in outcome.latencies]
    worst = max(latencies_ms)
    name = f"search 10k, {WRITERS} writers x {WRITES_PER_WRITER} stores"
    record(f"{name}: writing took", outcome.writing_s, "s")
    record(f"{name}: searches meanwhile", len(latencies_ms), "")
    record(f"{name}: p50", float(np.percentile(latencies_ms, 50)), "ms")
    record(f"{name}: p99", float(np.percentile(latencies_ms, 99)), "ms")
    record(
        f"{name}: max",
        worst,
        "ms",
        f"<= {SEARCH_UNDER_WRITES_MAX_TARGET_MS:g} ms",
        worst <= SEARCH_UNDER_WRITES_MAX_TARGET_MS,
    )
    errors = len(outcome.errors)
    record(f"{name}: errors", errors, "", "0", errors == 0)
    failed = {
        label: (code, stderr.decode(errors="replace")[-1500:])
        for label, (code, stderr) in outcome.writers.items()
        if code != 0
    }
    assert failed == {}, f"writers exited non-zero: {failed}"
    assert outcome.errors == [], f"{errors} searches failed, first: {outcome.errors[:5]}"
    assert before == 10_000
    assert after - before == WRITERS * WRITES_PER_WRITER, "rows stored by the writers"


async def _catch_up_timings(db: Path) -> list[float]:
    """Seconds of the warm searcher's `catch_up()` after one foreign write, RUNS times."""
    settings = Settings(db=str(db))
    async with (
        DevStream.open(settings, migrate_schema=False) as warm,
        DevStream.open(settings, migrate_schema=False) as foreign,  # its own pool and index
    ):
        await warm.memory.search(common_queries()[0], limit=LIMIT)
        timings: list[float] = []
        for n in range(RUNS):
            marker = f"catchupmarker{string.ascii_lowercase[n]}"
            stored = await foreign.memory.store(f"{marker}: stored by another process", "context")
            started = time.perf_counter()
            followed = await warm.memory.catch_up()
            timings.append(time.perf_counter() - started)
            assert followed == Followed(changes=1), f"catch-up {n} did more than apply the write"
            found = [hit.entry.id for hit in (await warm.memory.search(marker)).hits]
            assert stored.entry.id in found, f"the warm searcher does not see foreign write {n}"
    return timings


def test_catch_up_after_one_foreign_write_100k(
    benchmark: BenchmarkFixture, corpora: Callable[[int], Path], run: Run, tmp_path: Path
) -> None:
    """A warm DevStream on a 100k copy, one memory stored through another pool: the time
    until the warm one's index has it."""
    db = copy_database(corpora(100_000), tmp_path)
    timings = benchmark.pedantic(lambda: run(_catch_up_timings(db)), rounds=1, iterations=1)
    # Each run asserted that it applied one change and that the warm searcher finds it.
    assert len(timings) == RUNS
    median_ms = 1000 * statistics.median(timings)
    record(
        f"catch-up 100k: median of {len(timings)}",
        median_ms,
        "ms",
        f"<= {CATCH_UP_TARGET_MS:g} ms",
        median_ms <= CATCH_UP_TARGET_MS,
    )
