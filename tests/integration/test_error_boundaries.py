"""Faults across components: a full disk, a writer killed mid-write, a locked database, a
batch the database refuses halfway, an embedding server that stalls during task execution,
hostile arguments to every public method. Each ends in a typed error or a degraded answer,
nothing stored before is lost, a refused call writes nothing, and the work continues once
the fault is gone."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from devstream import DevStream, Settings
from devstream.checks import shown
from devstream.db.memory_store import MemoryFilter
from devstream.errors import (
    DevStreamError,
    InvalidInput,
    NotFound,
    StorageBusy,
    StorageFull,
)
from devstream.memory.service import NewMemory
from devstream.testing import FakeOllama
from tests.integration import hostile
from tests.integration.conftest import (
    MigratedSchema,
    after_cooldown,
    ollama_devstream,
    store_generation,
    template_file,
)
from tests.support import REPO_ROOT, repo_pythonpath, single_task

HANG_GUARD_S = 60  # a fault that hangs instead of failing would stop here


@pytest_asyncio.fixture
async def one_connection(
    integration_database_schema: MigratedSchema, tmp_path: Path
) -> AsyncIterator[DevStream]:
    """A real database whose pool has a single connection, so a connection-level pragma
    (a size limit) applies to every statement."""
    path = tmp_path / "single.db"
    path.write_bytes(template_file(integration_database_schema).read_bytes())
    async with DevStream.open(Settings(db=str(path), pool_size=1), migrate_schema=False) as ds:
        yield ds


async def _scalar(ds: DevStream, sql: str) -> object:
    async with ds.pool.read_transaction() as conn:
        return await conn.scalar(text(sql))


async def _check_integrity(ds: DevStream) -> None:
    """SQLite's own integrity check, and the full-text index against its table; on
    PostgreSQL (which recovers from its own log) every row's tsvector is in place."""
    if not ds.pool.on_sqlite:
        assert (
            await _scalar(ds, "SELECT count(*) FROM memory_entries WHERE search_text IS NULL") == 0
        )
        return
    assert await _scalar(ds, "PRAGMA integrity_check") == "ok"
    async with ds.pool.write_transaction() as conn:
        await conn.exec_driver_sql("INSERT INTO memory_fts(memory_fts) VALUES ('integrity-check')")


# --- resource exhaustion ---------------------------------------------------------------------


@pytest.mark.sqlite_only(
    "SQLite's page limit stands in for a full disk; a full tablespace is out of reach"
)
async def test_a_full_disk_is_typed_loses_nothing_and_work_resumes(
    one_connection: DevStream,
) -> None:
    ds = one_connection
    task = await single_task(ds, "Write a large report")
    kept = await ds.memory.store_many([NewMemory(f"kept note {n}", "context") for n in range(20)])
    await ds.workflow.start_task(task.id)
    pages = await _scalar(ds, "PRAGMA page_count")
    await _scalar(ds, f"PRAGMA max_page_count = {pages}")  # the disk is now full

    large = [NewMemory(f"report part {n}: " + "data " * 2_000, "output") for n in range(20)]
    with pytest.raises(StorageFull, match="database or disk is full") as full:
        await ds.memory.store_many(large)
    assert "free disk space" in str(full.value)
    with pytest.raises(StorageFull):
        await ds.workflow.complete_task(task.id, "report: " + "data " * 10_000)
    assert (await ds.tasks.task(task.id)).status == "active"  # the transition rolled back too
    entries = await ds.memory.entries(limit=None)
    assert [e.id for e in entries] == [r.entry.id for r in kept]

    await _scalar(ds, "PRAGMA max_page_count = 1073741823")  # space is freed
    done = await ds.workflow.complete_task(task.id, "report: " + "data " * 10_000)
    assert done.task.status == "completed"
    assert len(await ds.memory.store_many(large)) == 20
    await _check_integrity(ds)
    hits = await ds.memory.search("kept note 7")
    assert hits.hits[0].entry.content == "kept note 7"


# --- a crash mid-write -------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.clock
async def test_a_writer_killed_mid_write_loses_only_what_it_had_not_committed(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    db = ds.settings.db
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.memory_writer",
        db,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": repo_pythonpath()},
        cwd=REPO_ROOT,
    )
    assert writer.stdout is not None
    committed: list[int] = []

    async def read_commits() -> None:
        while len(committed) < 100:
            line = await writer.stdout.readline()  # type: ignore[union-attr]
            assert line, "the writer stopped on its own"
            committed.extend(int(entry_id) for entry_id in line.split())

    await asyncio.wait_for(read_commits(), HANG_GUARD_S)
    writer.send_signal(signal.SIGKILL)  # no cleanup, no final commit, mid-batch
    await writer.wait()
    assert writer.returncode == -signal.SIGKILL

    stored = {e.id for e in await ds.memory.entries(limit=None)}
    assert set(committed) <= stored  # every batch it reported committed survived
    assert len(stored) % 5 == 0  # and no batch survived in part
    await _check_integrity(ds)
    note = await ds.memory.store("written after the crash", "context")
    assert note.created
    assert (await ds.memory.search("crash note")).hits


# --- a locked database ------------------------------------------------------------------------


@pytest.mark.clock
@pytest.mark.sqlite_only("another connection holds the file's write lock")
async def test_a_long_held_lock_is_a_typed_error_and_writes_resume(
    integration_database_schema: MigratedSchema, tmp_path: Path
) -> None:
    path = tmp_path / "locked.db"
    path.write_bytes(template_file(integration_database_schema).read_bytes())
    settings = Settings(db=str(path), busy_timeout_ms=100)
    async with DevStream.open(settings, migrate_schema=False) as ds:
        before = await ds.memory.store("stored before the lock", "context")
        other = sqlite3.connect(
            path, isolation_level=None
        )  # another process, as far as SQLite knows
        try:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StorageBusy, match="database is locked") as busy:
                await ds.memory.store("refused while locked", "context")
            assert "busy_timeout_ms" in str(busy.value)
        finally:
            other.rollback()
            other.close()
        after = await ds.memory.store("stored after the lock", "context")
        contents = sorted(e.content for e in await ds.memory.entries())
        assert contents == ["stored after the lock", "stored before the lock"]
        assert after.entry.id > before.entry.id


@pytest.mark.clock
@pytest.mark.postgresql_only("a row lock held by another session, bounded by lock_timeout")
async def test_a_row_lock_held_past_busy_timeout_is_a_typed_error_and_writes_resume(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    plan = await ds.tasks.create_plan("Held by another session")
    impatient = replace(ds.settings, busy_timeout_ms=100)
    async with DevStream.open(impatient, migrate_schema=False) as other:
        async with ds.pool.write_transaction() as holder:
            await holder.execute(
                text("SELECT id FROM intervention_plans WHERE id = :id FOR UPDATE"),
                {"id": plan.id},
            )
            with pytest.raises(StorageBusy, match="lock timeout") as busy:
                await other.tasks.set_plan_status(plan.id, "cancelled")
            assert "busy_timeout_ms" in str(busy.value)
        assert (await other.tasks.set_plan_status(plan.id, "cancelled")).status == "cancelled"


# --- transaction failures with partial data ------------------------------------------------------


async def test_a_batch_with_one_bad_link_is_refused_whole_naming_it(
    integration_devstream: DevStream,
) -> None:
    ds = integration_devstream
    plan = await ds.tasks.create_plan("Refusals")
    batch = [NewMemory(f"valid note {n}", "context", plan_id=plan.id) for n in range(10)]
    batch.insert(5, NewMemory("linked to a task that does not exist", "output", task_id=999_999))
    with pytest.raises(NotFound, match="task 999999 not found"):
        await ds.memory.store_many(batch)
    assert await ds.memory.entries(MemoryFilter(plan_id=plan.id)) == []
    assert (await ds.memory.search("valid note")).hits == []  # the index never saw them
    stored = await ds.memory.store_many([item for item in batch if item.task_id is None])
    assert len(stored) == 10


# --- the embedding server stalls during task execution -------------------------------------------


@pytest.mark.socket
@pytest.mark.clock
async def test_a_stalled_embedder_during_a_task_degrades_and_recovers(
    integration_devstream: DevStream, fake_ollama: FakeOllama
) -> None:
    base = integration_devstream
    ds = ollama_devstream(base.pool, base.settings, fake_ollama.url, timeout_s=0.2, attempts=1)
    try:
        task = await single_task(ds, "Summarise the incident")
        fake_ollama.stall(5.0)  # far past the client's 0.2 s timeout
        started = await asyncio.wait_for(ds.workflow.start_task(task.id), HANG_GUARD_S)
        assert started.context.degraded
        done = await asyncio.wait_for(
            ds.workflow.complete_task(task.id, "incident summary: the embedder stalled"),
            HANG_GUARD_S,
        )
        assert done.task.status == "completed"
        assert [m.entry.embedding_status for m in done.memories] == ["pending"]
        fake_ollama.recover()
        after_cooldown(ds)
        assert (await ds.memory.backfill()).remaining == 0
        result = await ds.memory.search("incident summary")
        assert not result.degraded
        assert result.hits[0].entry.id == done.memories[0].entry.id
    finally:
        await ds.memory.embedder.aclose()


# --- hostile arguments -----------------------------------------------------------------------


def _describe(method: str, hostile: dict[str, object], exc: BaseException) -> str:
    given = ", ".join(f"{name}={shown(value)}" for name, value in hostile.items())
    return f"{method}({given}) raised {type(exc).__name__}: {exc}"


async def _hostile_calls(
    ds: DevStream,
    world: hostile.World,
    plan: list[tuple[str, dict[str, object]]],
    state: Callable[[DevStream], Awaitable[object]],
) -> tuple[list[str], list[str]]:
    """Make each call in a savepoint of its own: (untyped exceptions, refusals after which
    `state` differs)."""
    seam = ds.pool.seam
    assert seam is not None, "the sweep runs inside the isolation seam"
    before = await state(ds)
    untyped, wrote = [], []
    for method, values in plan:
        async with seam.rolled_back():
            call = hostile.bound(ds, method)
            try:
                await call(**hostile.arguments(hostile.calls(world)[method], values))
            except DevStreamError as exc:
                if await state(ds) != before:
                    wrote.append(_describe(method, values, exc))
            except Exception as exc:  # collected, then asserted below
                untyped.append(_describe(method, values, exc))
    return untyped, wrote


async def test_every_argument_refuses_hostile_values_typed_and_writes_nothing(
    integration_devstream: DevStream,
) -> None:
    """Every public method, every argument, every value of `hostile.HOSTILE`: a typed error
    or a normal answer, never another exception, and a refusal commits no write (every write
    transaction replaces the store-generation token; the property below compares every row
    of every table instead)."""
    ds = integration_devstream
    world = await hostile.build_world(ds)
    plan = [(method, {argument: value}) for method, argument, value in hostile.sweep(world)]
    untyped, wrote = await _hostile_calls(ds, world, plan, lambda ds: store_generation(ds.pool))
    assert len(plan) > 2_000, "the sweep covers every method"
    assert not untyped, f"{len(untyped)} of {len(plan)} calls:\n" + "\n".join(untyped)
    assert not wrote, f"{len(wrote)} refused calls wrote:\n" + "\n".join(wrote)


_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.binary(),
    st.lists(st.integers() | st.text(), max_size=3), st.dictionaries(st.text(), st.integers()),
)  # fmt: skip
_METHODS = sorted(hostile.calls(hostile.World(1, 1, 1, 1, 1)))


@settings(
    max_examples=60,
    deadline=None,
    # The seam's savepoint undoes each example's writes: the fixture's store is reused safely.
    # Each example builds a plan, tasks and a memory in a real database: slow by design.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_values_of_any_arguments_are_typed_and_write_nothing(
    integration_devstream: DevStream, data: st.DataObject
) -> None:
    ds = integration_devstream
    seam = ds.pool.seam
    assert seam is not None
    async with seam.rolled_back():
        world = await hostile.build_world(ds)
        method = data.draw(st.sampled_from(_METHODS), label="method")
        names = sorted(hostile.calls(world)[method])
        chosen = data.draw(st.sets(st.sampled_from(names), min_size=1), label="arguments")
        values = {name: data.draw(_ANY, label=name) for name in sorted(chosen)}
        untyped, wrote = await _hostile_calls(ds, world, [(method, values)], hostile.contents)
    assert not untyped, untyped[0] if untyped else ""
    assert not wrote, wrote[0] if wrote else ""


# Look-alikes of an id that must not pass as one: a bool, a string, a float, out of range.
_NOT_IDS = (True, "1", 1.0, 0, -1, 2**63)


async def test_an_id_is_a_whole_number_in_range_never_a_look_alike(
    integration_devstream: DevStream,
) -> None:
    ds = integration_devstream
    seam = ds.pool.seam
    assert seam is not None
    world = await hostile.build_world(ds)
    accepted = []
    for method, valid in hostile.calls(world).items():
        for argument in (name for name in valid if name.endswith("_id")):
            for value in _NOT_IDS:
                async with seam.rolled_back():
                    call = hostile.bound(ds, method)
                    try:
                        await call(**hostile.arguments(valid, {argument: value}))
                    except InvalidInput:
                        continue
                    except DevStreamError as exc:  # collected, then asserted below
                        accepted.append(_describe(method, {argument: value}, exc))
                        continue
                accepted.append(f"{method}({argument}={value!r}) was accepted")
    assert not accepted, "\n".join(accepted)
