"""Whole workflows: from a plan to captured memories, from memories to planned work, through
failure and back, under load, and the demo as a user runs it."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstream import DevStream, Settings, transfer
from devstream.db import task_store
from devstream.db import transfer as db_transfer
from devstream.db.memory_store import MemoryFilter
from devstream.errors import BadExport, ExportTooNew, StorageBusy, StorageError, StorageFull
from devstream.memory.context import assemble
from devstream.memory.follow import Followed
from devstream.memory.service import MemoryService, NewMemory
from devstream.memory.vectors import encode
from devstream.workflow import Artifact
from tests.support import PROCESS_WAIT_S, devstream_cli

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
    created = datetime.fromisoformat(plan["created_at"])  # ISO 8601, `T` and offset
    assert (plan["created_at"][10], created.utcoffset()) == ("T", timedelta(0))
    phase = (await json_of("phase", "add", plan_id, "Build"))["phase"]
    phase_id = str(phase["id"])
    unneeded = str((await json_of("phase", "add", plan_id, "Unneeded"))["phase"]["id"])
    assert (await json_of("phase", "remove", unneeded))["removed"] == {"phase_id": int(unneeded)}
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
    assert f"\n  phase #{phase_id} Build [completed] 2/2 (1 completed, 1 skipped)\n" in text
    assert "nothing is ready" in text
    assert "transitions:" in text


async def test_cli_task_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", str(tmp_path / "errors.db")]
    assert await devstream_cli(*db, "plan", "create", "Plan") == 0
    assert await devstream_cli(*db, "stats") == 0
    assert "  transitions: none\n" in capsys.readouterr().out
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
    # A file that never ends is read no further than a memory holds.
    endless = ["task", "complete", "1", "--code", "/dev/zero"]
    cases.append((endless, "/dev/zero has more than 100,000 characters"))
    for args, message in cases:
        assert await devstream_cli(*db, *args) != 0
        captured = capsys.readouterr()
        assert message in captured.err
        assert len(captured.err.strip().splitlines()) == 1
        assert "Traceback" not in captured.err


async def test_listings_keep_one_line_per_row_whatever_a_title_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", str(tmp_path / "lines.db")]
    assert await devstream_cli(*db, "plan", "create", "Two\nlines") == 0
    assert await devstream_cli(*db, "phase", "add", "1", "A\r\nphase") == 0
    assert await devstream_cli(*db, "task", "add", "1", "Task\n\nwith  breaks") == 0
    capsys.readouterr()
    for args, row in (
        (["plan", "list"], "Two lines"),
        (["task", "list"], "Task with breaks"),
        (["task", "ready"], "Task with breaks"),
    ):
        assert await devstream_cli(*db, *args) == 0
        (line,) = capsys.readouterr().out.splitlines()
        assert line.endswith(row), line
    assert await devstream_cli(*db, "plan", "show", "1") == 0
    assert "  phase #1 A phase [pending] 0/1 (1 pending)\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["memory", "show", "7"], {"kind": "NotFound", "message": "memory 7 not found"}),
        (["task", "start", "x"], {"kind": "usage", "exit": 2}),
        (["bogus"], {"kind": "usage", "message": "No such command 'bogus'."}),
    ],
    ids=["not-found", "bad-argument", "unknown-command"],
)
async def test_with_json_an_error_is_one_json_object_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], error: dict[str, Any]
) -> None:
    db = ["--db", str(tmp_path / "errors.db")]
    assert await devstream_cli(*db, "init") == 0
    capsys.readouterr()
    code = await devstream_cli(*db, "--json", *args)
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    reported = json.loads(line)["error"]
    assert reported["exit"] == code != 0
    assert {key: reported[key] for key in error} == error
    without = await devstream_cli(*db, *args)
    assert capsys.readouterr().err.startswith("devstream: error: ")
    assert without == code


@pytest.mark.parametrize(
    "command",
    [["memory", "search", "anything"], ["memory", "add", "new", "--type", "context"]],
    ids=["reading", "writing"],
)
async def test_a_store_path_no_file_can_have_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    too_long = tmp_path / ("a" * 300 + ".db")  # past the file system's 255 bytes a name
    assert await devstream_cli("--db", str(too_long), *command) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"devstream: error: cannot use {too_long} as a database: ")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "command",
    [
        ["memory", "search", "anything"],
        ["memory", "show", "1"],
        ["task", "ready"],
        ["task", "start", "1"],
        ["stats"],
        ["export"],
        ["prime"],
        ["import", "--dry-run", "-"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
async def test_a_command_that_creates_nothing_refuses_a_store_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """A mistyped --db would otherwise be made into an empty store that answers nothing."""
    missing = tmp_path / "mistyped.db"
    assert await devstream_cli("--db", str(missing), *command) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        f"devstream: error: no DevStream store at {missing} (run `devstream init` to create "
        "it, or check --db, DEVSTREAM_DB and the config file)"
    )
    assert await asyncio.to_thread(os.listdir, tmp_path) == []


@pytest.mark.parametrize(
    "command",
    [
        ["init"],
        ["memory", "add", "the first memory", "--type", "context"],
        ["plan", "create", "The first plan"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
async def test_a_command_that_creates_something_makes_the_store(
    tmp_path: Path, command: list[str]
) -> None:
    new = tmp_path / "new.db"
    assert await devstream_cli("--db", str(new), *command) == 0
    assert await devstream_cli("--db", str(new), "stats") == 0


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


# --- moving a store: export and import ------------------------------------------------------


async def filled(ds: DevStream) -> None:
    """A store with one of everything an export holds: finished and open work, dependencies,
    task events, context injections, and memories with and without links."""
    plan = await ds.tasks.create_plan("Move the store", description="to a new machine")
    first = await ds.tasks.add_phase(plan.id, "Prepare")
    second = await ds.tasks.add_phase(plan.id, "Move")
    dump = await ds.tasks.add_task(first.id, "Dump the rows", priority=8)
    check = await ds.tasks.add_task(first.id, "Check the dump", depends_on=[dump.id])
    await ds.tasks.add_task(second.id, "Load the rows", depends_on=[dump.id, check.id])
    await ds.memory.store("JSON Lines keep one record per line", "decision")
    await ds.memory.store("snake_case names in every column", "documentation", keywords=["style"])
    await run_ready(ds, plan.id, output="{title}: done, and checked twice")
    await ds.tasks.create_plan("An idea for later", priority=2)


async def exported(ds: DevStream, *, embeddings: bool = True) -> list[dict[str, Any]]:
    """The store's export, header first, as parsed lines."""
    out = io.StringIO()
    await transfer.export(ds, out, embeddings=embeddings)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def rows_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An export's rows: its lines between the header and the end line."""
    assert records[-1]["kind"] == transfer.END, "an export ends with its end line"
    return records[1:-1]


def ended(header: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An export of these rows, its end line counting them."""
    return [header, *rows, transfer.end_line(Counter(row["kind"] for row in rows))]


def normalised(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records past the header with every id replaced by its rank among its kind's ids,
    so that two stores holding the same rows under other ids compare equal."""
    ranks: dict[str, dict[int, int]] = {}
    for record in records[1:]:
        if "id" in record:
            of_kind = ranks.setdefault(record["kind"], {})
            of_kind[record["id"]] = len(of_kind) + 1
    links = {"plan_id": "plan", "phase_id": "phase", "task_id": "task", "depends_on_id": "task"}
    out = []
    for record in records[1:]:
        fixed = dict(record)
        if "id" in fixed:
            fixed["id"] = ranks[fixed["kind"]][fixed["id"]]
        for column, kind in links.items():
            if fixed.get(column) is not None:
                fixed[column] = ranks[kind][fixed[column]]
        if fixed["kind"] == "context_injection":
            fixed["memory_ids"] = [ranks["memory"][i] for i in fixed["memory_ids"]]
        out.append(fixed)
    return out


def export_file(tmp_path: Path, records: list[dict[str, Any]], name: str = "export.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


async def imported(ds: DevStream, path: Path, **options: Any) -> transfer.ImportReport:
    with path.open(encoding="utf-8") as source:
        return await transfer.import_(ds, source, **options)


async def test_a_store_moves_by_export_and_import_and_comes_out_the_same(
    integration_devstream: DevStream, integration_real_database: DevStream, tmp_path: Path
) -> None:
    source, target = integration_devstream, integration_real_database
    await filled(source)
    first = await exported(source)
    kinds = Counter(record["kind"] for record in rows_of(first))
    assert kinds == {
        "plan": 2,
        "phase": 2,
        "task": 3,
        "dependency": 3,
        "task_event": 6,
        "memory": 5,
        "context_injection": 3,
    }
    report = await imported(target, export_file(tmp_path, first))
    assert report.added == kinds
    assert (report.matched, report.resumed) == (0, 0)
    second = await exported(target)
    assert second[0]["export_id"] != first[0]["export_id"]
    assert normalised(second) == normalised(first)
    # What was moved works there: the vectors came along, so searching needs no backfill.
    assert await target.memory.waiting() == 0
    hits = (await target.memory.search("one record per line")).hits
    assert hits[0].entry.content == "JSON Lines keep one record per line"


async def test_text_that_other_readers_break_lines_at_stays_one_line_and_comes_back(
    integration_devstream: DevStream, integration_real_database: DevStream, tmp_path: Path
) -> None:
    """U+0085, U+2028 and U+2029 are line breaks to `str.splitlines` and JavaScript."""
    text = "first\x85second\u2028third\u2029fourth, and caf\u00e9"
    await integration_devstream.memory.store(text, "context")
    out = io.StringIO()
    await transfer.export(integration_devstream, out)
    written = out.getvalue()
    assert written.splitlines() == written.split("\n")[:-1], "a record spans lines"
    assert "caf\u00e9" in written, "other text stays as it is"
    await imported(
        integration_real_database, export_file(tmp_path, await exported(integration_devstream))
    )
    (entry,) = await integration_real_database.memory.entries()
    assert entry.content == text


async def test_a_store_crosses_to_this_backend_and_back_byte_for_byte(
    integration_real_database: DevStream, tmp_path: Path
) -> None:
    """SQLite -> JSON Lines -> this run's backend (PostgreSQL in its cells) -> JSON Lines ->
    SQLite: the first and last exports are the same bytes once ids are renumbered."""
    async with DevStream.open(tmp_path / "origin.db") as origin:
        await filled(origin)
        first = await exported(origin)
    await imported(integration_real_database, export_file(tmp_path, first))
    middle = await exported(integration_real_database)
    # The ids the import took are not given out again (PostgreSQL's come from sequences).
    after = await integration_real_database.tasks.create_plan("Added after the import")
    assert after.id > max(r["id"] for r in middle[1:] if r["kind"] == "plan")
    async with DevStream.open(tmp_path / "back.db") as back:
        await imported(back, export_file(tmp_path, middle, "middle.jsonl"))
        last = await exported(back)
    assert [json.dumps(r) for r in normalised(last)] == [json.dumps(r) for r in normalised(first)]
    assert [json.dumps(r) for r in normalised(middle)] == [json.dumps(r) for r in normalised(first)]


async def test_an_import_gives_no_memory_the_id_of_a_deleted_one(
    integration_devstream: DevStream, integration_real_database: DevStream, tmp_path: Path
) -> None:
    source, target = integration_devstream, integration_real_database
    await source.memory.store("a memory on the move", "context")
    path = export_file(tmp_path, await exported(source))
    kept = (await target.memory.store("kept", "context")).entry
    newest = (await target.memory.store("the newest, then deleted", "context")).entry
    await target.memory.delete(newest.id)
    await imported(target, path)
    ids = [entry.id for entry in await target.memory.entries()]
    assert ids[0] == kept.id
    assert ids[1] > newest.id


async def test_an_import_cut_short_resumes_and_adds_nothing_twice(
    integration_devstream: DevStream, integration_real_database: DevStream, tmp_path: Path
) -> None:
    source, target = integration_devstream, integration_real_database
    await filled(source)
    path = export_file(tmp_path, await exported(source, embeddings=False))
    seen: list[tuple[int, int]] = []

    def killed_after_two_batches(done: int, total: int) -> None:
        seen.append((done, total))
        if len(seen) == 2:
            raise KeyboardInterrupt  # as a kill between two transactions leaves it

    with pytest.raises(KeyboardInterrupt):
        await imported(target, path, batch=4, progress=killed_after_two_batches)
    assert seen == [(4, 24), (8, 24)]
    report = await imported(target, path, batch=4)
    assert report.resumed == 8, "the lines the first run committed are not written again"
    assert sum(report.added.values()) + report.resumed == 24
    moved = await exported(target, embeddings=False)
    assert normalised(moved) == normalised(await exported(source, embeddings=False))
    assert sum((await imported(target, path)).added.values()) == 0
    # Without vectors the memories wait for the embedder, as new ones do.
    assert await target.memory.waiting() == 5


async def test_an_import_failing_after_some_batches_says_they_stand_and_a_rerun_resumes(
    integration_devstream: DevStream,
    integration_real_database: DevStream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, target = integration_devstream, integration_real_database
    await filled(source)
    path = export_file(tmp_path, await exported(source, embeddings=False))
    write, writes = db_transfer.write, 0

    async def full_at_the_third(*args: Any) -> None:
        nonlocal writes
        writes += 1
        if writes == 3:  # the third batch: two lines of plans, then two of phases, stand
            raise StorageFull("database error: database or disk is full")
        await write(*args)

    monkeypatch.setattr(db_transfer, "write", full_at_the_third)
    # Its own hint stays; the export's header is line 1, then two lines of plans and two of
    # phases stand.
    says = "free disk space and retry.*lines up to 5 were imported before it.*resumes after"
    with pytest.raises(StorageFull, match=says):
        await imported(target, path, batch=2)
    monkeypatch.undo()
    assert (await imported(target, path, batch=2)).resumed == 4
    moved = await exported(target, embeddings=False)
    assert normalised(moved) == normalised(await exported(source, embeddings=False))


async def test_an_import_beside_another_of_the_same_export_is_refused_writing_nothing(
    integration_devstream: DevStream,
    integration_real_database: DevStream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two imports of one export at once: the one that read the ledger before the other
    wrote is refused when it comes to the same rows, and a rerun adds nothing."""
    source, target = integration_devstream, integration_real_database
    await filled(source)
    path = export_file(tmp_path, await exported(source, embeddings=False))
    await imported(target, path)
    after_the_first = await exported(target, embeddings=False)

    async def read_before_the_first_wrote(*_: object) -> dict[str, dict[int, int]]:
        return {}

    monkeypatch.setattr(db_transfer, "imported", read_before_the_first_wrote)
    with pytest.raises(StorageBusy, match="another import of this export wrote the same rows"):
        await imported(target, path, batch=2)
    monkeypatch.undo()
    assert rows_of(await exported(target, embeddings=False)) == rows_of(after_the_first)
    assert sum((await imported(target, path)).added.values()) == 0


async def test_a_dry_run_says_what_it_would_add_and_writes_nothing(
    integration_devstream: DevStream, integration_real_database: DevStream, tmp_path: Path
) -> None:
    await filled(integration_devstream)
    records = await exported(integration_devstream)
    path = export_file(tmp_path, records)
    report = await imported(integration_real_database, path, dry_run=True)
    assert report.dry_run
    assert report.added == Counter(record["kind"] for record in rows_of(records))
    assert rows_of(await exported(integration_real_database)) == [], "a refusal wrote"


async def test_memories_already_in_the_store_are_matched_not_copied(
    integration_devstream: DevStream, integration_real_database: DevStream, tmp_path: Path
) -> None:
    await filled(integration_devstream)
    target = integration_real_database
    await imported(target, export_file(tmp_path, await exported(integration_devstream)))
    # A second export of the same store is another export: its plans and tasks are new
    # rows here, but the memories that belong to no plan are here already.
    again = await imported(target, export_file(tmp_path, await exported(integration_devstream)))
    assert again.matched == 2
    assert again.added["memory"] == 3
    assert again.added["plan"] == 2


async def test_repeated_memories_in_one_transaction_are_written_once(
    integration_devstream: DevStream, integration_real_database: DevStream, tmp_path: Path
) -> None:
    """A file (edited by hand: a store never holds such a pair) with the same memory twice,
    and an injection of the repeat: one row is written, both lines map onto it."""
    await filled(integration_devstream)
    header, *rows, _ = await exported(integration_devstream)
    memory = next(r for r in rows if r["kind"] == "memory")
    repeat = {**memory, "id": max(r["id"] for r in rows if r["kind"] == "memory") + 1}
    injection = next(r for r in rows if r["kind"] == "context_injection")
    at = rows.index(memory) + 1
    rows[at:at] = [repeat]
    injection["memory_ids"] = [repeat["id"]]
    records = ended(header, rows)
    report = await imported(integration_real_database, export_file(tmp_path, records))
    assert (report.added["memory"], report.matched) == (5, 1)
    target = integration_real_database
    (kept,) = [e for e in await target.memory.entries() if e.content == memory["content"]]
    async with target.pool.read_transaction() as conn:
        injected = [
            json.loads(injection.memory_ids)
            for task in await target.tasks.tasks()
            for injection in await task_store.injections(conn, task.id)
        ]
    assert [kept.id] in injected
    again = await imported(target, export_file(tmp_path, records))
    assert again.added["memory"] == 0  # the ledger has both lines


def _bad(records: list[dict[str, Any]], case: str) -> list[dict[str, Any]]:
    """The export spoilt one way."""
    header, rows = records[0], [dict(r) for r in rows_of(records)]
    first_task = next(i for i, r in enumerate(rows) if r["kind"] == "task")
    first_memory = next(r for r in rows if r["kind"] == "memory")
    if case == "unknown kind":
        rows[0]["kind"] = "planet"
    elif case == "link ahead":
        rows.insert(0, rows.pop(first_task))
    elif case == "missing field":
        del rows[first_task]["title"]
    elif case == "unknown field":
        rows[first_task]["colour"] = "blue"
    elif case == "wrong hash":
        first_memory["content"] += "!"
    elif case == "cycle":
        edge = next(r for r in rows if r["kind"] == "dependency")
        rows.append({**edge, "task_id": edge["depends_on_id"], "depends_on_id": edge["task_id"]})
    elif case == "no header":
        return rows
    elif case in _TWICE:
        line = next(r for r in rows if r["kind"] == _TWICE[case])
        # The same row again at the end (a phase under a new id, in the same position).
        rows.append({**line, "id": 1_000} if case == "a phase position twice" else dict(line))
    elif case == "dependency across plans":
        rows.extend(_across_plans(rows))
    elif case == "memory links that disagree":
        other = next(r for r in rows if r["kind"] == "plan" and r["title"] == "An idea for later")
        linked = next(r for r in rows if r["kind"] == "memory" and r["task_id"] is not None)
        linked["plan_id"] = other["id"]
    elif case in _SPOILT_FIELDS:
        line_kind, field, value = _SPOILT_FIELDS[case]
        # The last line of its kind: past the first transaction of a two-line batch.
        [*_, last] = (r for r in rows if r["kind"] == line_kind)
        last[field] = value
    else:
        first_memory.update(_spoilt_vector(first_memory, case))
    return ended(header, rows)


_TWICE = {
    "an id twice": "plan",
    "a phase position twice": "phase",
    "a dependency twice": "dependency",
}


def _across_plans(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A phase and a task in the plan with none, and a dependency of that task on one of
    the other plan's tasks."""
    empty = next(r for r in rows if r["kind"] == "plan" and r["title"] == "An idea for later")
    phase = next(r for r in rows if r["kind"] == "phase")
    task = next(r for r in rows if r["kind"] == "task")
    dependency = next(r for r in rows if r["kind"] == "dependency")
    return [
        {**phase, "id": 1_000, "plan_id": empty["id"], "position": 0},
        {**task, "id": 1_000, "phase_id": 1_000},
        {**dependency, "task_id": 1_000, "depends_on_id": task["id"]},
    ]


# A value its column cannot hold, in the last line of a kind.
_SPOILT_FIELDS: dict[str, tuple[str, str, object]] = {
    "text in a count": ("memory", "access_count", "many"),
    "unknown status": ("task", "status", "paused"),
    "priority out of range": ("plan", "priority", 11),
    "position past PostgreSQL's integer": ("phase", "position", 2**31),
    "time without offset": ("task_event", "at", "2026-12-07T10:00:00"),
    "time that is no time": ("phase", "created_at", "yesterday"),
    "nested memory ids": ("context_injection", "memory_ids", [[1]]),
    "id as text": ("task", "id", "7"),
    "NUL in a title": ("task", "title", "a\x00b"),
    "null in a column that may be left out": ("memory", "embedding_attempts", None),
    "time past the last in UTC": ("task_event", "at", "9999-12-31T23:59:59-14:00"),
}


def _spoilt_vector(memory: dict[str, Any], case: str) -> dict[str, Any]:
    dimension = memory["embedding_dim"]
    assert memory["embedding"] is not None, "the export holds vectors"
    spoilt: dict[str, dict[str, Any]] = {
        "short vector": {"embedding": _stored([0.5] * (dimension - 1))},
        "NaN vector": {"embedding": _stored([float("nan")] * dimension)},
        "huge vector": {"embedding": _stored([1e30] * dimension)},
        "not base64": {"embedding": "not base64!"},
        "vector without model": {"embedding_model": None},
        "dimension of zero": {"embedding_dim": 0},
    }
    return spoilt[case]


def _stored(values: list[float]) -> str:
    return base64.b64encode(encode(values)).decode("ascii")


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("unknown kind", "unknown kind 'planet'"),
        ("link ahead", "which no line before holds"),
        ("missing field", "has no title"),
        ("unknown field", "has unknown colour"),
        ("wrong hash", "content_hash is not the hash"),
        ("cycle", "form a cycle"),
        ("no header", "is this a DevStream export?"),
        # A vector not as the search index reads it would break every search of the store.
        ("short vector", r"holds 3068 bytes, not the 3072 of 768 float32 values"),
        ("NaN vector", "embedding has NaN, infinite"),
        ("huge vector", "length overflows float32"),
        ("not base64", "embedding is not base64"),
        ("vector without model", "comes without its vector or its model"),
        ("dimension of zero", "embedding_dim must be a whole number from 1 to 2147483647, got 0"),
        ("text in a count", "a memory line: access_count must be a whole number from 0"),
        ("unknown status", "unknown task status 'paused'"),
        ("priority out of range", "priority must be a whole number from 1 to 10, got 11"),
        (
            "position past PostgreSQL's integer",
            "position must be a whole number from 0 to 2147483647, got 2147483648",
        ),
        ("time without offset", "at must be an ISO 8601 time with its UTC offset"),
        ("time that is no time", "created_at must be an ISO 8601 time .* got 'yesterday'"),
        ("nested memory ids", r"each of memory_ids must be a whole number .* got \[1\]"),
        ("id as text", "id must be a whole number from 1 to 2\\^63-1, got '7'"),
        ("NUL in a title", "task title contains a NUL character"),
        ("null in a column that may be left out", "embedding_attempts may be left out, not null"),
        ("time past the last in UTC", "at must be an ISO 8601 time"),
        # What the database would refuse halfway through writing, or the services refuse.
        ("an id twice", "a second plan with id"),
        ("a phase position twice", "a second phase at position 0 of plan"),
        ("a dependency twice", "a second dependency of"),
        ("dependency across plans", "depends on task .* of plan .* stays within its plan"),
        ("memory links that disagree", "a memory line: task .* is in plan .*, not plan"),
    ],
)
async def test_a_spoilt_export_is_refused_naming_the_line_and_nothing_is_written(
    integration_devstream: DevStream,
    integration_real_database: DevStream,
    tmp_path: Path,
    case: str,
    says: str,
) -> None:
    await filled(integration_devstream)
    path = export_file(tmp_path, _bad(await exported(integration_devstream), case))
    with pytest.raises(BadExport, match=says) as refused:
        await imported(integration_real_database, path, batch=2)
    assert "nothing was imported" in str(refused.value)
    assert rows_of(await exported(integration_real_database)) == [], "a refusal wrote"


@pytest.mark.parametrize(
    ("cut", "says"),
    [
        ("last line", "line 26 of the export: the export stops before its end line"),
        ("half the file", "line 14 of the export: the export stops before its end line"),
        ("a row too few", "line 25 of the export: the end line counts 3 context_injection"),
        ("a line after the end", "line 27 of the export: a line after the end line"),
        ("end of another shape", 'line 26 of the export: the end line must be {"kind": "end"'),
    ],
)
async def test_an_export_cut_short_or_past_its_end_is_refused(
    integration_devstream: DevStream,
    integration_real_database: DevStream,
    tmp_path: Path,
    cut: str,
    says: str,
) -> None:
    """The end line counts each kind's rows: a file that lost its last lines (a copy cut
    short, a disk that filled) is refused, not imported in part."""
    await filled(integration_devstream)
    records = await exported(integration_devstream)
    assert len(records) == 26  # the header, 24 rows and the end line
    if cut == "last line":
        records = records[:-1]
    elif cut == "half the file":
        records = records[:13]
    elif cut == "a row too few":
        records = [*records[:-2], records[-1]]
    elif cut == "a line after the end":
        records.append(records[1])
    else:
        records[-1] = {"kind": "end", "rows": {"plan": 2}}
    with pytest.raises(BadExport, match=re.escape(says)):
        await imported(integration_real_database, export_file(tmp_path, records))
    assert rows_of(await exported(integration_real_database)) == []


async def test_an_export_of_format_version_1_has_no_end_line_and_imports(
    integration_devstream: DevStream, integration_real_database: DevStream, tmp_path: Path
) -> None:
    await filled(integration_devstream)
    header, *rows, _ = await exported(integration_devstream)
    older = [{**header, "version": 1}, *rows]
    report = await imported(integration_real_database, export_file(tmp_path, older))
    assert report.added == Counter(row["kind"] for row in rows)


@pytest.mark.parametrize(
    ("text", "error", "says"),
    [
        ("", BadExport, "line 1 of the export: the file is empty"),
        ("{not json\n", BadExport, "line 1 of the export: not JSON"),
        ("[1, 2]\n", BadExport, "a line must be a JSON object"),
        (
            '{"format": "devstream-export", "version": 3, "export_id": "x"}\n',
            ExportTooNew,
            "format version 3; this DevStream reads up to 2",
        ),
    ],
    ids=["empty", "not-json", "not-an-object", "newer-format"],
)
async def test_what_is_no_export_of_this_version_is_refused(
    integration_real_database: DevStream, tmp_path: Path, text: str, error: type, says: str
) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(error, match=says):
        await imported(integration_real_database, path)
    assert rows_of(await exported(integration_real_database)) == []


async def test_an_export_that_is_not_utf8_is_refused_naming_the_line(
    integration_real_database: DevStream, tmp_path: Path
) -> None:
    path = tmp_path / "export.jsonl"
    header = '{"format": "devstream-export", "version": 1, "export_id": "x"}\n'
    path.write_bytes(header.encode() + b'{"kind": "plan", "title": "caf\xe9"}\n')
    refused = pytest.raises(BadExport, match="line 2 of the export: not UTF-8 text")
    with refused, path.open(encoding="utf-8", errors="surrogateescape") as source:  # as the CLI
        await transfer.import_(integration_real_database, source)
    # Decoded strictly, the error comes a buffer ahead of the line that holds it.
    with pytest.raises(BadExport, match=r"line 1 of the export: not UTF-8 text .* or in a line"):
        await imported(integration_real_database, path)
    assert rows_of(await exported(integration_real_database)) == []


async def test_an_import_stands_when_search_cannot_be_made_ready(
    integration_real_database: DevStream,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await filled(integration_real_database)
    path = tmp_path / "moved.jsonl"
    source = integration_real_database.settings.database_url
    assert await devstream_cli("--db", source, "export", "-o", str(path)) == 0

    async def refuse(service: MemoryService) -> Followed:
        raise StorageError("database error: no space left on device")

    monkeypatch.setattr(MemoryService, "catch_up", refuse)
    capsys.readouterr()
    assert await devstream_cli("--db", str(tmp_path / "target.db"), "import", str(path)) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("added 2 plans, 2 phases, 3 tasks")
    assert "the first search will make it instead: database error: no space" in printed.err


async def test_the_cli_exports_to_a_file_and_imports_it_elsewhere(
    integration_real_database: DevStream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await filled(integration_real_database)
    source = integration_real_database.settings.database_url
    target = str(tmp_path / "target.db")
    path = tmp_path / "moved.jsonl"
    assert await devstream_cli("--db", source, "export", "-o", str(path)) == 0
    assert capsys.readouterr().out.startswith("exported 2 plans, 2 phases, 3 tasks")
    assert await devstream_cli("--db", source, "export") == 0
    printed = capsys.readouterr()
    assert printed.err.startswith("exported 2 plans"), "the summary keeps off the export"
    assert printed.out.splitlines()[1:] == path.read_text(encoding="utf-8").splitlines()[1:]
    assert await devstream_cli("--db", target, "init") == 0
    assert await devstream_cli("--db", target, "import", str(path), "--dry-run") == 0
    assert await devstream_cli("--db", target, "import", str(path)) == 0
    # Through a pipe, as `devstream export | devstream import -` runs: stdin cannot be read
    # twice, so it is checked on its way into a temporary copy.
    piped = str(tmp_path / "piped.db")
    with path.open("rb") as stdin:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "devstream", "--db", piped, "import", "-"],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("added 2 plans, 2 phases, 3 tasks, 3 dependencies")
    assert "making the search index ready for the new memories" in done.stderr
    memories = sum(line.startswith('{"kind":"memory"') for line in path.read_text().splitlines())
    hint = f"{memories} memories waiting to be embedded: run `devstream memory backfill`"
    assert done.stdout.splitlines()[-1] == hint, "the export had no vectors"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for db in (target, piped):
        async with DevStream.open(Settings(db=db)) as moved:
            assert normalised(await exported(moved, embeddings=False)) == normalised(lines)


async def test_export_writes_through_a_symlink_into_a_pipe_and_refuses_what_it_cannot(
    integration_real_database: DevStream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A symlink stays a symlink and its target gets the export; a pipe (as a device) is
    written, never replaced by a file; a missing folder is a one-line error. (Only paths
    in the test's own folder: a regression must not replace a system device.)"""
    source = integration_real_database.settings.database_url
    real, link = tmp_path / "real.jsonl", tmp_path / "link.jsonl"
    link.symlink_to(real)
    assert await devstream_cli("--db", source, "export", "-o", str(link)) == 0
    assert link.is_symlink()
    assert json.loads(real.read_text(encoding="utf-8").splitlines()[0])["format"]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = await asyncio.create_subprocess_exec("cat", str(fifo), stdout=subprocess.PIPE)
    try:
        exported = devstream_cli("--db", source, "export", "-o", str(fifo))
        assert await asyncio.wait_for(exported, PROCESS_WAIT_S) == 0
        read, _ = await asyncio.wait_for(reader.communicate(), PROCESS_WAIT_S)
    finally:
        if reader.returncode is None:  # the export never opened the pipe: cat waits on
            reader.kill()
            await reader.wait()
    assert read.startswith(b'{"format":"devstream-export"')
    assert fifo.is_fifo()
    capsys.readouterr()
    missing = tmp_path / "missing" / "e.jsonl"
    assert await devstream_cli("--db", source, "export", "-o", str(missing)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"devstream: error: cannot write the export to {missing}: No such")
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("redirect", "says"),
    [
        ("import - <&-", "line 1 of the export: the file is empty"),
        ("export >&-", "stdout is closed (name a file with -o)"),
        # A redirect of the shell's: `-o` on a system device would risk it if this regressed.
        ("export > /dev/full", "cannot write the export to stdout: No space left on device"),
    ],
    ids=["stdin-closed", "stdout-closed", "disk-full"],
)
async def test_export_and_import_on_a_closed_or_full_stream_fail_in_one_line(
    integration_real_database: DevStream, redirect: str, says: str
) -> None:
    done = await _devstream_in_shell(integration_real_database, redirect)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"devstream: error: {says}"), line


@pytest.mark.subprocess
async def test_export_to_dev_stdout_goes_down_the_pipe(
    integration_real_database: DevStream,
) -> None:
    """`-o /dev/stdout` names the pipe's descriptor, a path that resolves to no file: the
    export goes down it, and its summary to stderr, as without -o."""
    await filled(integration_real_database)
    done = await _devstream_in_shell(integration_real_database, "export -o /dev/stdout | cat")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith('{"format":"devstream-export"'), done.stdout[:200]
    assert [json.loads(line)["kind"] for line in lines[1:]].count("plan") == 2
    assert done.stderr.startswith("exported 2 plans"), done.stderr


@pytest.mark.subprocess
async def test_an_export_whose_reader_stops_early_ends_quietly(
    integration_real_database: DevStream,
) -> None:
    """`export | head`: more than a pipe's buffer (64 KiB) is left to write when head exits."""
    ds = integration_real_database
    vectors = np.random.default_rng(7).normal(size=(20, ds.memory.embedder.dimension))
    await ds.memory.store_many(
        [NewMemory(f"memory {n}", "context", embedding=v) for n, v in enumerate(vectors)]
    )
    done = await _devstream_in_shell(ds, "export --with-embeddings | head -c 10")
    assert (done.stdout, done.stderr) == ('{"format":', "")


async def _devstream_in_shell(ds: DevStream, tail: str) -> subprocess.CompletedProcess[str]:
    """`devstream --db <the store> TAIL` run by sh, for its redirects and pipes."""
    db = shlex.quote(ds.settings.database_url)
    command = f"{shlex.quote(sys.executable)} -m devstream --db {db} {tail}"
    return await asyncio.to_thread(
        subprocess.run, ["sh", "-c", command], capture_output=True, text=True, timeout=120
    )


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and the infinities too: Python's json reads and writes them
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=4,
)


@pytest.fixture
async def full_export(integration_devstream: DevStream) -> list[dict[str, Any]]:
    await filled(integration_devstream)
    return await exported(integration_devstream)


@settings(
    # Examples share the target store (a function-scoped fixture): each compares the store
    # with itself just before, and imports under an export id of its own.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_value_in_any_field_is_imported_or_refused_with_nothing_written(
    full_export: list[dict[str, Any]],
    integration_real_database: DevStream,
    tmp_path: Path,
    data: st.DataObject,
) -> None:
    """One field of one line replaced by any JSON value: the import either goes through or
    is refused as a BadExport naming the line, and a refused one leaves the store as it was."""
    header, rows = dict(full_export[0]), [dict(r) for r in full_export[1:]]
    header["export_id"] = uuid.uuid4().hex  # not drawn: Hypothesis repeats its draws
    row = data.draw(st.sampled_from(rows), label="line")
    field = data.draw(st.sampled_from(sorted(row.keys() - {"kind"})), label="field")
    row[field] = data.draw(_JSON, label="value")
    target = integration_real_database
    before = await exported(target)
    outcome: transfer.ImportReport | BadExport
    try:
        outcome = await imported(target, export_file(tmp_path, [header, *rows]), batch=2)
    except BadExport as refused:
        outcome = refused
    if isinstance(outcome, BadExport):
        assert re.match(r"line \d+ of the export: ", str(outcome)), outcome
        assert normalised(await exported(target)) == normalised(before), "a refusal wrote"
    else:  # under an export id of its own, every plan is new
        assert outcome.added["plan"] == sum(r["kind"] == "plan" for r in rows)
