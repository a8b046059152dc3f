"""Whole workflows: from a plan to captured memories, from memories to planned work, through
failure and back, under load, and the demo as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstream import DevStream
from devstream.db import task_store
from devstream.db.memory_store import MemoryFilter
from devstream.memory.context import assemble
from devstream.workflow import Artifact
from tests.support import devstream_cli

DEMO_SECTIONS = ("plan", "tasks_run", "context_injected", "memories_captured", "search", "metrics")


async def run_ready(ds: DevStream, plan_id: int, output: str = "done: {title}") -> list[int]:
    """Start and complete every ready task of the plan until none is left; the order run."""
    order = []
    while ready := await ds.tasks.ready(plan_id=plan_id, limit=1):
        task = ready[0]
        await ds.workflow.start_task(task.id)
        await ds.workflow.complete_task(task.id, output.format(title=task.title))
        order.append(task.id)
    return order


# --- plan -> phases -> execution -> memory ----------------------------------------------------


async def test_plan_to_phases_to_execution_to_captured_memory(
    integration_devstream: DevStream,
) -> None:
    ds = integration_devstream
    plan = await ds.tasks.create_plan("Migrate the config loader", priority=6)
    read = await ds.tasks.add_phase(plan.id, "Read")
    write = await ds.tasks.add_phase(plan.id, "Write")
    parse = await ds.tasks.add_task(read.id, "Parse TOML files", estimated_minutes=8)
    env = await ds.tasks.add_task(read.id, "Layer environment variables", depends_on=[parse.id])
    save = await ds.tasks.add_task(write.id, "Save settings atomically", depends_on=[env.id])
    order = await run_ready(ds, plan.id, output="{title}: the settings loader is updated")
    assert order == [parse.id, env.id, save.id]
    progress = await ds.tasks.progress(plan.id)
    assert progress.complete
    assert [p.phase.id for p in progress.phases] == [read.id, write.id]
    captured = await ds.memory.entries(MemoryFilter(plan_id=plan.id))
    assert sorted((e.task_id, e.content) for e in captured) == sorted(
        [
            (parse.id, "Parse TOML files: the settings loader is updated"),
            (env.id, "Layer environment variables: the settings loader is updated"),
            (save.id, "Save settings atomically: the settings loader is updated"),
        ]
    )
    # The later task saw what the earlier ones left behind.
    async with ds.pool.read_transaction() as conn:
        (injection,) = await task_store.injections(conn, save.id)
    assert set(json.loads(injection.memory_ids)) >= {e.id for e in captured if e.task_id == env.id}
    assert (await ds.tasks.set_plan_status(plan.id, "completed")).status == "completed"


async def test_memory_search_to_context_to_planning_to_execution(
    integration_devstream: DevStream, integration_memory_entries: list[object]
) -> None:
    ds = integration_devstream
    # What the store already knows drives what gets planned.
    found = await ds.memory.search("backfill embeddings batching", limit=3)
    lesson = found.hits[0].entry
    assert lesson.content_type == "learning"
    context = await assemble(ds.memory, "backfill embeddings", budget=200)
    assert lesson.id in context.memory_ids
    plan = await ds.tasks.create_plan("Speed up backfill", context.text[:200])
    phase = await ds.tasks.add_phase(plan.id, "Apply the lesson")
    task = await ds.tasks.add_task(phase.id, "Batch embeddings by 64 in backfill")
    started = await ds.workflow.start_task(task.id, budget=200)
    assert lesson.id in started.context.memory_ids
    done = await ds.workflow.complete_task(
        task.id, "Backfill now sends 64 inputs per request", [Artifact("BATCH = 64")]
    )
    assert [m.entry.content_type for m in done.memories] == ["output", "code"]
    after = await ds.memory.search("backfill inputs per request", limit=1)
    assert after.hits[0].entry.task_id == task.id


async def test_error_recovery_keeps_the_system_consistent_and_the_work_going(
    integration_devstream: DevStream,
) -> None:
    ds = integration_devstream
    plan = await ds.tasks.create_plan("Harden the importer")
    phase = await ds.tasks.add_phase(plan.id, "Fix")
    flaky = await ds.tasks.add_task(phase.id, "Handle truncated files")
    after = await ds.tasks.add_task(phase.id, "Report import errors", depends_on=[flaky.id])
    for attempt in range(2):
        await ds.workflow.start_task(flaky.id)
        await ds.workflow.fail_task(flaky.id, f"attempt {attempt}: truncated header crashed")
        assert [t.id for t in await ds.tasks.ready(plan_id=plan.id)] == []  # nothing runnable
        await ds.tasks.retry(flaky.id)
    # The same error twice is stored once per task; the output once.
    await ds.workflow.start_task(flaky.id)
    await ds.workflow.fail_task(flaky.id, "attempt 1: truncated header crashed")
    await ds.tasks.retry(flaky.id)
    assert await run_ready(ds, plan.id) == [flaky.id, after.id]
    final = await ds.tasks.task(flaky.id)
    assert (final.status, final.retry_count) == ("completed", 3)
    memories = await ds.memory.entries(MemoryFilter(task_id=flaky.id))
    contents = sorted(m.content for m in memories)
    assert contents == [
        "attempt 0: truncated header crashed",
        "attempt 1: truncated header crashed",
        "done: Handle truncated files",
    ]
    async with ds.pool.read_transaction() as conn:
        transitions = await task_store.transition_counts(conn)
        injections = await task_store.injections(conn, flaky.id)
    assert transitions == {
        "active->completed": 2,
        "active->failed": 3,
        "failed->pending": 3,
        "pending->active": 5,
    }
    assert len(injections) == 4  # one per start


# --- under load --------------------------------------------------------------------------------


async def test_many_plans_in_flight_at_once_on_a_real_pool(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    plans = []
    for n in range(8):
        plan = await ds.tasks.create_plan(f"Service {n}")
        previous: list[int] = []
        for name in ("Design", "Build", "Verify"):
            phase = await ds.tasks.add_phase(plan.id, name)
            tasks = [
                await ds.tasks.add_task(
                    phase.id, f"{name} part {k} of service {n}", depends_on=previous
                )
                for k in range(3)
            ]
            previous = [tasks[-1].id]
        plans.append(plan.id)
    orders = await asyncio.gather(*(run_ready(ds, plan_id) for plan_id in plans))
    assert [len(order) for order in orders] == [9] * 8
    for plan_id in plans:
        assert (await ds.tasks.progress(plan_id)).complete
    entries = await ds.memory.entries(MemoryFilter(content_types=frozenset({"output"})), limit=None)
    assert len(entries) == 72
    assert len({e.task_id for e in entries}) == 72  # every output captured exactly once
    report = await ds.report()
    assert report["store"]["transitions"] == {  # type: ignore[index]
        "active->completed": 72,
        "pending->active": 72,
    }
    assert ds.pool.stats.in_use == 0


# --- from the shell ----------------------------------------------------------------------------


async def test_the_cli_runs_a_plan_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", str(tmp_path / "cli.db")]

    async def json_of(*args: str) -> Any:
        assert await devstream_cli(*db, *args, "--json") == 0
        return json.loads(capsys.readouterr().out)

    plan = (await json_of("plan", "create", "Ship the CLI", "--priority", "7"))["plan"]
    plan_id = str(plan["id"])
    phase = (await json_of("phase", "add", plan_id, "Build"))["phase"]
    phase_id = str(phase["id"])
    first = (await json_of("task", "add", phase_id, "Parse arguments", "--estimate", "4"))["task"]
    second = (await json_of("task", "add", phase_id, "Print help"))["task"]
    a, b = str(first["id"]), str(second["id"])
    assert (await json_of("task", "depend", b, a))["dependency"]["depends_on_id"] == int(a)
    listed = (await json_of("task", "list", "--plan", plan_id))["tasks"]
    assert [t["blocked"] for t in listed] == [False, True]
    assert (await json_of("task", "undepend", b, a))["removed"]["depends_on_id"] == int(a)
    assert [t["blocked"] for t in (await json_of("task", "list"))["tasks"]] == [False, False]
    await json_of("task", "depend", b, a)
    assert [t["id"] for t in (await json_of("task", "ready"))["tasks"]] == [int(a)]
    await json_of("memory", "add", "Parse arguments with click groups", "--type", "decision")
    started = await json_of("task", "start", a, "--budget", "100")
    assert started["context"]["memory_ids"]
    code = tmp_path / "cli.py"
    code.write_text("import click\n", encoding="utf-8")
    done = await json_of(
        "task",
        "complete",
        a,
        "--output",
        "click group with subcommands",
        "--code",
        str(code),
        "--decision",
        "click over argparse",
    )
    assert [m["content_type"] for m in done["memories"]] == ["output", "code", "decision"]
    await json_of("task", "start", b)
    assert (await json_of("task", "fail", b, "--error", "help text overflowed"))["task"][
        "status"
    ] == "failed"
    assert (await json_of("task", "retry", b))["task"]["retry_count"] == 1
    assert (await json_of("task", "skip", b))["task"]["status"] == "skipped"
    shown = await json_of("plan", "show", plan_id)
    assert (shown["done"], shown["total"], shown["percent"]) == (2, 2, 100.0)
    assert (await json_of("plan", "status", plan_id, "completed"))["plan"]["status"] == "completed"
    assert [p["status"] for p in (await json_of("plan", "list"))["plans"]] == ["completed"]
    stats = await json_of("stats")
    assert stats["store"]["tasks"] == {"completed": 1, "skipped": 1}
    # The same commands print readable text.
    for args in (
        ["plan", "show", plan_id],
        ["plan", "list"],
        ["task", "list"],
        ["task", "ready"],
        ["stats"],
    ):
        assert await devstream_cli(*db, *args) == 0
    text = capsys.readouterr().out
    assert f"plan #{plan_id} Ship the CLI [completed] 2/2 tasks done (100%)" in text
    assert "nothing is ready" in text
    assert "transitions:" in text


async def test_cli_task_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", str(tmp_path / "errors.db")]
    assert await devstream_cli(*db, "stats") == 0
    assert "  transitions: none\n" in capsys.readouterr().out
    assert await devstream_cli(*db, "plan", "create", "Plan") == 0
    assert await devstream_cli(*db, "phase", "add", "1", "Phase") == 0
    capsys.readouterr()
    cases = [
        (["task", "add", "1", "Too big", "--estimate", "30"], "split it into smaller tasks"),
        (["task", "start", "99"], "task 99 not found"),
        (["task", "depend", "1", "1"], "would create a cycle"),
        (["task", "complete", "1", "--code", str(tmp_path)], "Invalid value for '--code'"),
        (["plan", "status", "1", "completed"], "plan 1 is draft; it cannot become completed"),
    ]
    assert await devstream_cli(*db, "task", "add", "1", "Real") == 0
    binary = tmp_path / "image.bin"
    await asyncio.to_thread(binary.write_bytes, b"\xff\xfe\x00binary")
    cases.append((["task", "complete", "1", "--code", str(binary)], "cannot read"))
    for args, message in cases:
        assert await devstream_cli(*db, *args) != 0
        captured = capsys.readouterr()
        assert message in captured.err
        assert len(captured.err.strip().splitlines()) == 1
        assert "Traceback" not in captured.err


def _fresh_home_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTREAM_")}
    env.update(HOME=str(home), XDG_DATA_HOME="", XDG_CONFIG_HOME="")
    return env


@pytest.mark.subprocess
async def test_the_demo_runs_in_a_fresh_home_offline(tmp_path: Path) -> None:
    # Even with an Ollama URL configured, the demo stays offline.
    env = {**_fresh_home_env(tmp_path), "DEVSTREAM_OLLAMA_URL": "http://127.0.0.1:9"}
    command = [sys.executable, "-m", "devstream", "demo", "--json"]
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert tuple(document) == DEMO_SECTIONS
    plan = document["plan"]
    assert (plan["status"], plan["done"], plan["total"]) == ("completed", 6, 6)
    assert [p["status"] for p in plan["phases"]] == ["completed"] * 3
    runs = document["tasks_run"]
    assert [r["status"] for r in runs].count("failed") == 1
    assert all(r["status"] == "completed" for r in runs if r["retry_count"])
    injected = document["context_injected"]
    assert len(injected) == len(runs)
    assert all(0 < i["tokens"] <= i["budget"] for i in injected)
    captured = document["memories_captured"]
    assert {m["content_type"] for m in captured} >= {"output", "code", "decision", "error"}
    assert all(m["embedding_status"] == "embedded" for m in captured)
    assert document["search"]["hits"]
    assert not document["search"]["degraded"]
    store = document["metrics"]["store"]
    assert store["transitions"]["failed->pending"] == 1
    assert store["context"]["injections"] == len(injected)
    # Nothing was left behind in the home directory.
    assert not await asyncio.to_thread(lambda: list(tmp_path.rglob("*.db")))
    text = await asyncio.to_thread(
        subprocess.run, command[:-1], env=env, capture_output=True, text=True, timeout=120
    )
    assert text.returncode == 0, text.stderr
    for heading in (
        "Plan",
        "Tasks run",
        "Context injected",
        "Memories captured",
        "Search",
        "Metrics",
    ):
        assert f"== {heading}" in text.stdout
