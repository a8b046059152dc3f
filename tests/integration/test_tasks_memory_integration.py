"""Tasks and memory together: context injected at start, output captured at completion,
state kept consistent across both, progress tracked, claims safe under concurrency."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from devstream import DevStream, Settings
from devstream.db import memory_store, task_store
from devstream.db.memory_store import MemoryFilter
from devstream.db.records import MicroTask, Phase, Plan
from devstream.db.types import utcnow
from devstream.errors import (
    DependencyCycle,
    DevStreamError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    TaskBlocked,
)
from devstream.memory.context import approximate_tokens
from devstream.tasks.states import PLAN_FLOW
from devstream.testing import FakeOllama
from devstream.vocabulary import DONE, OPEN_PLANS
from devstream.workflow import Artifact
from tests.conftest import loop_factory, requested_loop
from tests.integration.conftest import MigratedSchema, after_cooldown, template_file
from tests.support import started_together


@dataclass
class Work:
    """A plan with two phases: design (a, b after a) then build (c after b, d free)."""

    plan: Plan
    design: Phase
    build: Phase
    a: MicroTask
    b: MicroTask
    c: MicroTask
    d: MicroTask


async def make_work(ds: DevStream) -> Work:
    tasks = ds.tasks
    plan = await tasks.create_plan("Ship the cache", "A read-through cache for search")
    design = await tasks.add_phase(plan.id, "Design")
    build = await tasks.add_phase(plan.id, "Build")
    a = await tasks.add_task(design.id, "Pick an eviction policy", "LRU or LFU for entries")
    b = await tasks.add_task(design.id, "Size the cache", depends_on=[a.id], priority=8)
    c = await tasks.add_task(build.id, "Write the cache layer", depends_on=[b.id], priority=9)
    d = await tasks.add_task(build.id, "Document the settings", priority=2)
    return Work(plan, design, build, a, b, c, d)


@pytest_asyncio.fixture
async def work(integration_devstream: DevStream) -> Work:
    return await make_work(integration_devstream)


# --- creating tasks -------------------------------------------------------------------------


async def test_plans_phases_and_tasks_are_created_in_order(
    integration_devstream: DevStream, work: Work
) -> None:
    tasks = integration_devstream.tasks
    assert (work.design.position, work.build.position) == (0, 1)
    first = await tasks.add_phase(work.plan.id, "Research", position=5)
    assert (first.position, (await tasks.add_phase(work.plan.id, "Ship")).position) == (5, 6)
    last = await tasks.add_phase(work.plan.id, "Last", position=2**31 - 1)
    with pytest.raises(InvalidInput, match=f"phase at the last position, {last.position}"):
        await tasks.add_phase(work.plan.id, "After the last")
    assert work.plan.status == "draft"
    listed = await tasks.tasks(plan_id=work.plan.id)
    assert [t.id for t in listed] == [work.a.id, work.b.id, work.c.id, work.d.id]
    assert [d.depends_on_id for d in await tasks.dependencies(work.c.id)] == [work.b.id]
    assert await tasks.blocked([t.id for t in listed]) == {work.b.id, work.c.id}
    assert [p.id for p in await tasks.plans(status="draft")] == [work.plan.id]


async def test_plans_phases_and_tasks_are_updated_field_by_field(
    integration_devstream: DevStream, work: Work
) -> None:
    tasks = integration_devstream.tasks
    plan = await tasks.update_plan(work.plan.id, title="Ship the search cache", priority=9)
    assert (plan.title, plan.priority, plan.status) == ("Ship the search cache", 9, "draft")
    assert plan.updated_at >= work.plan.updated_at
    phase = await tasks.update_phase(work.build.id, name="Implement", position=7)
    assert (phase.name, phase.position) == ("Implement", 7)
    task = await tasks.update_task(work.a.id, description="LRU only", estimated_minutes=9)
    assert (task.description, task.estimated_minutes, task.title) == (
        "LRU only",
        9,
        work.a.title,
    )
    with pytest.raises(InvalidInput, match="cannot update status of a plan; editable: title"):
        await tasks.update_plan(work.plan.id, status="active")
    with pytest.raises(InvalidInput, match="cannot update nothing of a phase"):
        await tasks.update_phase(work.build.id)
    with pytest.raises(InvalidInput, match="phase name is empty"):
        await tasks.update_phase(work.build.id, name=" ")
    with pytest.raises(InvalidInput, match="phase position must be a whole number from 0"):
        await tasks.update_phase(work.build.id, position=-1)
    with pytest.raises(InvalidInput, match="description must be text, got int"):
        await tasks.update_plan(work.plan.id, description=3)
    with pytest.raises(NotFound, match="plan 999999 not found"):
        await tasks.update_plan(999_999, title="gone")
    # Two phases of a plan never share a position.
    with pytest.raises(
        InvalidInput, match=f"has a phase at position 7 already .phase {work.build.id}"
    ):
        await tasks.update_phase(work.design.id, position=7)
    with pytest.raises(InvalidInput, match="has a phase at position 7 already"):
        await tasks.add_phase(work.plan.id, "Elsewhere", position=7)
    assert (await tasks.update_phase(work.build.id, position=7)).position == 7  # its own


async def test_edits_are_stripped_and_closed_plans_refuse_them(
    integration_devstream: DevStream, work: Work
) -> None:
    tasks = integration_devstream.tasks
    assert (await tasks.update_task(work.a.id, title="  Pick a policy  ")).title == "Pick a policy"
    await tasks.set_plan_status(work.plan.id, "cancelled")
    with pytest.raises(InvalidInput, match="is cancelled; its work can no longer change"):
        await tasks.update_task(work.a.id, priority=9)
    with pytest.raises(InvalidInput, match="is cancelled"):
        await tasks.update_phase(work.design.id, name="Thinking")
    renamed = await tasks.update_plan(work.plan.id, title="Cache (abandoned)")
    assert renamed.title == "Cache (abandoned)"


async def test_task_writes_do_not_make_the_memory_index_rebuild(
    integration_devstream: DevStream,
) -> None:
    ds = integration_devstream
    await ds.memory.store("Plans follow the store generation", "learning")
    await ds.memory.search("generation")  # the index is current now
    loads = ds.metrics.counters["memory.index.loads"]
    work = await make_work(ds)
    await ds.tasks.update_plan(work.plan.id, priority=8)
    await ds.workflow.start_task(work.a.id)
    await ds.workflow.complete_task(work.a.id, "policy chosen")
    hits = (await ds.memory.search("policy chosen")).hits
    assert ds.metrics.counters["memory.index.loads"] == loads
    assert hits[0].entry.content == "policy chosen"  # the completion's output, caught up


async def test_bad_task_input_is_refused_with_a_typed_error(
    integration_devstream: DevStream, work: Work
) -> None:
    tasks = integration_devstream.tasks
    with pytest.raises(InvalidInput, match=r"at most 10 minutes; 25 is too long.*split it"):
        await tasks.add_task(work.design.id, "Rewrite everything", estimated_minutes=25)
    # Past what the store holds too: the rule it breaks is the ten minutes.
    with pytest.raises(InvalidInput, match=r"at most 10 minutes; 1000.*\.\.\. is too long"):
        await tasks.add_task(work.design.id, "Rewrite everything", estimated_minutes=10**400)
    with pytest.raises(InvalidInput, match="priority must be a whole number from 1 to 10"):
        await tasks.add_task(work.design.id, "Urgent", priority=11)
    with pytest.raises(InvalidInput, match="task title is empty"):
        await tasks.add_task(work.design.id, "   ")
    with pytest.raises(InvalidInput, match="task title has 201 characters; the maximum is 200"):
        await tasks.add_task(work.design.id, "x" * 201)
    with pytest.raises(
        InvalidInput, match=r"estimate \(minutes\) must be a whole number from 1 to 10"
    ):
        await tasks.update_task(work.a.id, estimated_minutes=0)
    with pytest.raises(InvalidInput, match="cannot update status"):
        await tasks.update_task(work.a.id, status="completed")
    with pytest.raises(InvalidInput, match="unknown task status 'done'"):
        await tasks.tasks(status="done")
    with pytest.raises(InvalidInput, match="priority must be a whole number"):
        await tasks.add_task(work.design.id, "Boolean priority", priority=True)
    with pytest.raises(InvalidInput, match="description must be text, got int"):
        await tasks.create_plan("Plan", 123)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="phase position must be a whole number from 0"):
        await tasks.add_phase(work.plan.id, "Negative", position=-1)
    with pytest.raises(InvalidInput, match="from 0 to 2147483647, got 2147483648"):
        await tasks.add_phase(work.plan.id, "Past PostgreSQL's integer", position=2**31)
    with pytest.raises(InvalidInput, match="limit must be a whole number from 1"):
        await tasks.ready(limit=0)
    with pytest.raises(NotFound):
        await tasks.add_task(999_999, "Nowhere")
    with pytest.raises(NotFound):
        await tasks.add_phase(999_999, "Nowhere")
    assert len(await tasks.tasks(plan_id=work.plan.id)) == 4  # nothing was added


async def test_a_dependency_cycle_is_refused_naming_it(
    integration_devstream: DevStream, work: Work
) -> None:
    tasks = integration_devstream.tasks
    with pytest.raises(DependencyCycle) as cycle:
        await tasks.add_dependency(work.a.id, work.c.id)
    assert cycle.value.cycle == [work.a.id, work.c.id, work.b.id, work.a.id]
    assert f"task {work.a.id} -> task {work.c.id} -> task {work.b.id} -> task {work.a.id}" in str(
        cycle.value
    )
    with pytest.raises(DependencyCycle):
        await tasks.add_dependency(work.d.id, work.d.id)
    # A task whose dependency list names a missing task is not added at all.
    with pytest.raises(NotFound):
        await tasks.add_task(work.build.id, "Loop", depends_on=[work.c.id, 999_999])
    assert await tasks.dependencies(work.a.id) == []
    assert len(await tasks.tasks(plan_id=work.plan.id)) == 4


async def test_dependencies_across_plans_are_refused(
    integration_devstream: DevStream, work: Work
) -> None:
    tasks = integration_devstream.tasks
    other = await tasks.create_plan("Another plan")
    phase = await tasks.add_phase(other.id, "Only")
    stranger = await tasks.add_task(phase.id, "Unrelated")
    with pytest.raises(InvalidInput, match=r"cannot depend on task .* of another plan"):
        await tasks.add_dependency(stranger.id, work.a.id)
    with pytest.raises(NotFound):
        await tasks.add_dependency(stranger.id, 999_999)
    # A new task's are refused before it has an id to name, and it is not made.
    says = f"the new task .plan {other.id}. cannot depend on task {work.a.id} of another plan"
    with pytest.raises(InvalidInput, match=says):
        await tasks.add_task(phase.id, "Linked across", depends_on=[work.a.id])
    assert [t.title for t in await tasks.tasks(phase_id=phase.id)] == ["Unrelated"]


async def test_adding_a_dependency_that_is_there_changes_nothing(
    integration_devstream: DevStream, work: Work
) -> None:
    """As a retry does (the MCP tool is marked idempotent): the edge comes back as it was."""
    tasks = integration_devstream.tasks
    (before,) = await tasks.dependencies(work.b.id)
    assert before.depends_on_id == work.a.id
    assert await tasks.add_dependency(work.b.id, work.a.id) == before
    assert await tasks.dependencies(work.b.id) == [before]


async def test_only_pending_tasks_of_open_plans_get_dependencies(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream
    await ds.workflow.start_task(work.d.id)
    with pytest.raises(InvalidInput, match="is active; only a pending task's dependencies"):
        await ds.tasks.add_dependency(work.d.id, work.a.id)
    with pytest.raises(InvalidInput, match="is active; only a pending task's dependencies"):
        await ds.tasks.remove_dependency(work.d.id, work.a.id)
    # A repeated prerequisite is one dependency.
    twice = await ds.tasks.add_task(work.build.id, "Twice", depends_on=[work.a.id, work.a.id])
    assert [d.depends_on_id for d in await ds.tasks.dependencies(twice.id)] == [work.a.id]
    # Blocked describes pending tasks only.
    listed = await ds.tasks.tasks(plan_id=work.plan.id)
    assert await ds.tasks.blocked([t.id for t in listed]) == {work.b.id, work.c.id, twice.id}
    # Closed, the plan would hold its active task for good: it cannot move any more.
    for status in ("cancelled", "archived"):
        with pytest.raises(InvalidInput, match=f"be {status} while task {work.d.id} is active"):
            await ds.tasks.set_plan_status(work.plan.id, status)
    assert (await ds.tasks.task(work.d.id)).status == "active"
    await ds.tasks.skip(work.d.id)
    await ds.tasks.set_plan_status(work.plan.id, "cancelled")
    with pytest.raises(InvalidInput, match="is cancelled"):
        await ds.tasks.add_dependency(work.c.id, work.a.id)


# --- context injection ----------------------------------------------------------------------


async def test_starting_a_task_injects_relevant_memories_within_the_budget(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream
    own = await ds.memory.store(
        "Eviction policy: LRU keeps recently searched entries; LFU favours popular ones",
        "decision",
        plan_id=work.plan.id,
    )
    elsewhere = await ds.memory.store(
        "An LRU eviction policy served the old cache well", "learning"
    )
    await ds.memory.store("Unrelated: the release notes template", "documentation")
    started = await ds.workflow.start_task(work.a.id, budget=60)
    assert started.task.status == "active"
    assert started.task.started_at is not None
    # The plan's own memory ranks first; the budget holds.
    assert started.context.memory_ids[0] == own.entry.id
    assert elsewhere.entry.id in started.context.memory_ids
    assert started.context.tokens_used <= 60
    assert approximate_tokens(started.context.text) <= 60
    assert "LRU keeps recently searched entries" in started.context.text
    # The injection is recorded, and each injected memory counts a retrieval.
    async with ds.pool.read_transaction() as conn:
        (injection,) = await task_store.injections(conn, work.a.id)
    assert json.loads(injection.memory_ids) == started.context.memory_ids
    assert injection.tokens == started.context.tokens_used
    assert (await ds.memory.get(own.entry.id)).access_count == 2  # injection + this get
    plan = await ds.queries.plans.get(work.plan.id)
    assert plan.status == "active"  # the first start activates it


async def test_a_small_budget_injects_less_and_never_more(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream
    for n in range(5):
        await ds.memory.store(f"Eviction policy note {n}: " + "detail " * 10, "context")
    started = await ds.workflow.start_task(work.a.id, budget=50)
    assert started.context.tokens_used <= 50
    assert len(started.context.included) == 1
    assert started.injection.tokens == started.context.tokens_used


# --- capturing output -----------------------------------------------------------------------


async def test_completing_a_task_captures_its_output_as_linked_memories(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream
    await ds.workflow.start_task(work.a.id)
    done = await ds.workflow.complete_task(
        work.a.id,
        "Chose LRU with a 10k-entry bound",
        [Artifact("class Cache:\n    pass", "code"), Artifact("LRU over LFU: simpler", "decision")],
    )
    assert done.task.status == "completed"
    started_at, completed_at = done.task.started_at, done.task.completed_at
    assert started_at is not None
    assert completed_at is not None
    # The duration is the run's own: from its start to its completion.
    assert done.task.duration_s == (completed_at - started_at).total_seconds()
    kinds = sorted(m.entry.content_type for m in done.memories)
    assert kinds == ["code", "decision", "output"]
    for captured in done.memories:
        entry = captured.entry
        assert (entry.plan_id, entry.phase_id, entry.task_id) == (
            work.plan.id,
            work.design.id,
            work.a.id,
        )
        assert entry.embedding_status == "embedded"
    linked = await ds.memory.entries(MemoryFilter(task_id=work.a.id))
    assert {e.id for e in linked} == {m.entry.id for m in done.memories}
    hits = await ds.memory.search("LRU bound", filters=MemoryFilter(task_id=work.a.id))
    assert hits.hits[0].entry.content == "Chose LRU with a 10k-entry bound"
    assert ds.stats()["latencies"]["task.duration"]["count"] == 1  # type: ignore[index]


async def test_failing_a_task_keeps_the_error_and_retry_brings_it_back(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream
    await ds.workflow.start_task(work.a.id)
    failed = await ds.workflow.fail_task(work.a.id, "Benchmark harness crashed: out of memory")
    assert failed.task.status == "failed"
    (error,) = failed.memories
    assert (error.entry.content_type, error.entry.task_id) == ("error", work.a.id)
    with pytest.raises(IllegalTransition, match="is failed; it cannot become active"):
        await ds.workflow.start_task(work.a.id)
    retried = await ds.tasks.retry(work.a.id)
    assert (retried.status, retried.retry_count) == ("pending", 1)
    again = await ds.workflow.start_task(work.a.id)
    # The earlier failure is part of the context the retry gets.
    assert error.entry.id in again.context.memory_ids
    assert (await ds.workflow.complete_task(work.a.id, "Fixed")).task.retry_count == 1


async def test_illegal_transitions_name_the_current_and_requested_state(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream
    with pytest.raises(IllegalTransition) as refused:
        await ds.workflow.complete_task(work.a.id, "never started")
    assert (refused.value.current, refused.value.requested) == ("pending", "completed")
    assert "from pending it can become: active, skipped" in str(refused.value)
    with pytest.raises(IllegalTransition, match="is pending; it cannot become pending"):
        await ds.tasks.retry(work.a.id)
    await ds.tasks.skip(work.d.id)
    with pytest.raises(IllegalTransition, match="none: it is final"):
        await ds.tasks.skip(work.d.id)
    with pytest.raises(TaskBlocked, match=f"blocked by unfinished task.*{work.a.id}"):
        await ds.workflow.start_task(work.b.id)
    assert await task_store_memories(ds, work) == 0  # nothing captured by refused calls


async def task_store_memories(ds: DevStream, work: Work) -> int:
    return len(await ds.memory.entries(MemoryFilter(plan_id=work.plan.id)))


# --- consistency across both systems -------------------------------------------------------


async def test_a_fault_between_transition_and_capture_leaves_neither(
    integration_devstream: DevStream, work: Work, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = integration_devstream
    await ds.workflow.start_task(work.a.id)

    async def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(memory_store, "store_new", disk_full)
    for finish in (
        ds.workflow.complete_task(work.a.id, "Output that must not half-land"),
        ds.workflow.fail_task(work.a.id, "An error that must not half-land"),
    ):
        with pytest.raises(OSError, match="No space left"):
            await finish
    monkeypatch.undo()
    task = await ds.tasks.task(work.a.id)
    assert task.status == "active"  # the transition rolled back with the capture
    counters = ds.stats()["counters"]
    assert "task.transitions.active->completed" not in counters  # type: ignore[operator]
    assert "task.transitions.active->failed" not in counters  # type: ignore[operator]
    assert task.completed_at is None
    assert await ds.memory.entries(MemoryFilter(task_id=work.a.id)) == []
    async with ds.pool.read_transaction() as conn:
        assert await task_store.transition_counts(conn) == {"pending->active": 1}
    # The workflow continues where it was.
    done = await ds.workflow.complete_task(work.a.id, "Output that lands")
    assert [m.entry.content for m in done.memories] == ["Output that lands"]


async def test_a_lost_claim_leaves_no_injection_and_counts_nothing(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream
    memory = await ds.memory.store("Eviction policy trade-offs", "learning", plan_id=work.plan.id)
    results = await asyncio.gather(
        *(ds.workflow.start_task(work.a.id) for _ in range(3)), return_exceptions=True
    )
    started = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(started) == 1
    assert all(isinstance(r, IllegalTransition) for r in refused)
    async with ds.pool.read_transaction() as conn:
        assert len(await task_store.injections(conn, work.a.id)) == 1
    entry = (await ds.memory.entries(MemoryFilter(task_id=None, plan_id=work.plan.id)))[0]
    assert entry.id == memory.entry.id
    assert entry.access_count == 1


async def test_concurrent_starts_of_one_task_on_a_real_pool_have_one_winner(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    work = await make_work(ds)
    for _ in range(3):  # each round on a fresh, ready task
        task = await ds.tasks.add_task(work.design.id, "Race me")
        results = await asyncio.gather(
            *(ds.workflow.start_task(task.id) for _ in range(8)), return_exceptions=True
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        assert len(winners) == 1
        assert all(isinstance(r, IllegalTransition) for r in results if r not in winners)
        async with ds.pool.read_transaction() as conn:
            assert len(await task_store.injections(conn, task.id)) == 1
            events = await task_store.transition_counts(conn)
    assert events["pending->active"] == 3


async def test_concurrent_starts_through_separate_pools_have_one_winner(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    work = await make_work(ds)
    db = ds.settings.db

    # Each opener has its own pool and writer lock, as another process would.
    async def start_elsewhere() -> str:
        async with DevStream.open(Settings(db=db), migrate_schema=False) as other:
            try:
                await other.workflow.start_task(work.a.id)
            except IllegalTransition:
                return "lost"
            return "won"

    outcomes = await asyncio.gather(*(start_elsewhere() for _ in range(4)))
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]


# --- the same rules with several OS processes on one store -------------------------------------

PROCESSES = 4
PROCESS_WAIT_S = 120.0  # generous: four interpreters importing on a busy machine
# SQLite's writers take turns (test_processes_write_one_file_without_lock_errors holds that
# for processes); PostgreSQL's run at once, and its locks keep these rules.
ON_POSTGRESQL = pytest.mark.postgresql_only("writers that run at once, kept in step by locks")


async def in_processes(db: str, *commands: list[str]) -> list[dict[str, Any]]:
    """Run each command as `tests.integration.invariant_worker DB ...` in a process of its
    own; all open the store first, then start their work at once. Their JSON answers."""
    module = "tests.integration.invariant_worker"
    ran = await started_together([[module, db, *c] for c in commands], PROCESS_WAIT_S)
    return [json.loads(output) for output in ran.outputs]


@pytest.mark.multiprocess
@ON_POSTGRESQL
async def test_processes_storing_the_same_memories_keep_each_once(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    answers = await in_processes(ds.settings.db, *[["store", "20"]] * PROCESSES)
    created = [entry_id for answer in answers for entry_id in answer["created"]]
    assert len(created) == len(set(created)) == 20  # each created once, by one process
    assert len(await ds.memory.entries(limit=None)) == 20


@ON_POSTGRESQL
async def test_connections_read_committed_whatever_the_databases_default(
    integration_real_database: DevStream,
) -> None:
    """The rules kept by locks rest on READ COMMITTED: a statement run after a lock is
    granted sees what the lock's holder committed."""
    ds = integration_real_database
    show = text("SHOW transaction_isolation")
    async with ds.pool.autocommit() as conn:
        name = await conn.scalar(text("SELECT current_database()"))
        await conn.execute(
            text(f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'")
        )
    bare = create_async_engine(ds.settings.db)
    try:
        async with bare.connect() as conn:
            assert await conn.scalar(show) == "repeatable read"  # the database's default
    finally:
        await bare.dispose()
    async with (
        DevStream.open(Settings(db=ds.settings.db), migrate_schema=False) as other,
        other.pool.write_transaction() as conn,
    ):
        assert await conn.scalar(show) == "read committed"


@pytest.mark.multiprocess
@ON_POSTGRESQL
async def test_processes_claiming_ready_tasks_each_win_different_ones(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    plan = await ds.tasks.create_plan("Claimed from many processes")
    phase = await ds.tasks.add_phase(plan.id, "All at once")
    tasks = [await ds.tasks.add_task(phase.id, f"task {n}") for n in range(12)]
    answers = await in_processes(ds.settings.db, *[["claim"]] * PROCESSES)
    started = [task_id for answer in answers for task_id in answer["started"]]
    assert sorted(started) == [task.id for task in tasks]  # every task, each by one process
    async with ds.pool.read_transaction() as conn:
        assert await task_store.transition_counts(conn) == {"pending->active": 12}


@pytest.mark.multiprocess
@ON_POSTGRESQL
async def test_processes_closing_a_cycle_from_both_ends_are_refused_but_one(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    plan = await ds.tasks.create_plan("Cycles from two sides")
    phase = await ds.tasks.add_phase(plan.id, "Pairs")
    pairs = [
        (await ds.tasks.add_task(phase.id, f"a{n}"), await ds.tasks.add_task(phase.id, f"b{n}"))
        for n in range(PROCESSES // 2)
    ]
    commands = []
    for a, b in pairs:  # for each pair, one process adds a -> b and another b -> a
        commands += [["depend", str(a.id), str(b.id)], ["depend", str(b.id), str(a.id)]]
    answers = await in_processes(ds.settings.db, *commands)
    for n, _ in enumerate(pairs):
        assert sorted(answer["added"] for answer in answers[2 * n : 2 * n + 2]) == [False, True]
    async with ds.pool.read_transaction() as conn:
        assert len(await task_store.plan_edges(conn, plan.id)) == len(pairs)


@pytest.mark.multiprocess
@ON_POSTGRESQL
async def test_processes_finishing_a_phase_together_leave_it_completed(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    plan = await ds.tasks.create_plan("Finished from many processes")
    phase = await ds.tasks.add_phase(plan.id, "Last tasks")
    tasks = [await ds.tasks.add_task(phase.id, f"task {n}") for n in range(PROCESSES)]
    for task in tasks:
        await ds.workflow.start_task(task.id)
    answers = await in_processes(ds.settings.db, *[["complete", str(t.id)] for t in tasks])
    assert sorted(answer["completed"] for answer in answers) == [task.id for task in tasks]
    assert (await ds.queries.phases.get(phase.id)).status == "completed"


# How long a writer may take to reach a lock another holds (generous: a busy machine); the
# holder then commits at once, well within the waiter's lock_timeout.
LOCK_WAIT_S = 30.0


async def _until_one_waits_for_a_lock(ds: DevStream, waiter: asyncio.Future[Any]) -> None:
    """Return once a session of the store waits for a lock, `waiter` still running."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        assert not waiter.done(), "it went ahead of the lock held"
        async with ds.pool.autocommit() as conn:
            if await conn.scalar(waiting):
                return
        assert time.monotonic() < deadline, f"nothing waited for the lock in {LOCK_WAIT_S:g} s"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def _archiving(ds: DevStream, plan_id: int) -> AsyncIterator[None]:
    """Inside: another client archives the plan, as `set_plan_status` does, and has not
    committed yet; it commits on the way out."""
    async with (
        DevStream.open(Settings(db=ds.settings.db), migrate_schema=False) as other,
        other.pool.write_transaction() as conn,
    ):
        await task_store.lock_plan(conn, plan_id)
        await other.queries.plans.update_in(conn, plan_id, {"status": "archived"})
        yield


async def _one_task_in_an_active_plan(ds: DevStream, title: str) -> tuple[Plan, MicroTask]:
    plan = await ds.tasks.create_plan(title)
    task = await ds.tasks.add_task((await ds.tasks.add_phase(plan.id, "Only")).id, "started")
    await ds.tasks.set_plan_status(plan.id, "active")
    return plan, task


@ON_POSTGRESQL
async def test_a_plan_closing_while_its_task_starts_waits_then_finds_it_active(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    plan, task = await _one_task_in_an_active_plan(ds, "Closed as a task starts")
    async with DevStream.open(Settings(db=ds.settings.db), migrate_schema=False) as other:
        async with ds.pool.write_transaction() as conn:  # a start, not yet committed
            claimed = await ds.tasks.claim(conn, task.id, "active")
            await ds.tasks.move(conn, claimed, "active", started_at=utcnow())
            closing = asyncio.ensure_future(other.tasks.set_plan_status(plan.id, "archived"))
            await _until_one_waits_for_a_lock(ds, closing)
        with pytest.raises(InvalidInput, match=f"while task {task.id} is active"):
            await closing
    assert (await ds.queries.plans.get(plan.id)).status == "active"


@ON_POSTGRESQL
async def test_a_task_starting_while_its_plan_closes_waits_then_finds_it_closed(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    plan, task = await _one_task_in_an_active_plan(ds, "Started as it closes")
    await ds.memory.catch_up()  # the vector index, built now: a build waits for every writer
    async with _archiving(ds, plan.id):
        starting = asyncio.ensure_future(ds.workflow.start_task(task.id))
        await _until_one_waits_for_a_lock(ds, starting)
    with pytest.raises(InvalidInput, match=f"plan {plan.id} is archived"):
        await starting
    assert (await ds.tasks.task(task.id)).status == "pending"


@ON_POSTGRESQL
async def test_a_session_ending_while_its_task_completes_waits_then_leaves_it_completed(
    integration_real_database: DevStream,
) -> None:
    """A release reads the session's tasks once any change to them in flight has committed:
    it must not turn a task completed meanwhile back to pending."""
    ds = integration_real_database
    _, task = await _one_task_in_an_active_plan(ds, "Completed as its session ends")
    await ds.workflow.start_task(task.id, session="ending")
    async with (
        DevStream.open(Settings(db=ds.settings.db), migrate_schema=False) as other,
        other.pool.write_transaction() as conn,  # a completion, not yet committed
    ):
        claimed = await other.tasks.claim(conn, task.id, "completed")
        await other.tasks.move(conn, claimed, "completed", completed_at=utcnow())
        releasing = asyncio.ensure_future(ds.tasks.release("ending"))
        await _until_one_waits_for_a_lock(ds, releasing)
    assert await releasing == []
    assert (await ds.tasks.task(task.id)).status == "completed"


@ON_POSTGRESQL
@pytest.mark.parametrize("change", ["add_phase", "add_task", "add_dependency"])
async def test_a_change_to_a_plan_closing_meanwhile_waits_then_finds_it_closed(
    integration_real_database: DevStream, change: str
) -> None:
    ds = integration_real_database
    plan, task = await _one_task_in_an_active_plan(ds, "Changed as it closes")
    other_task = await ds.tasks.add_task(task.phase_id, "another")
    changes: dict[str, Callable[[], Awaitable[object]]] = {
        "add_phase": lambda: ds.tasks.add_phase(plan.id, "Late"),
        "add_task": lambda: ds.tasks.add_task(task.phase_id, "Late"),
        "add_dependency": lambda: ds.tasks.add_dependency(other_task.id, task.id),
    }
    before = await ds.tasks.progress(plan.id)
    async with _archiving(ds, plan.id):
        changing = asyncio.ensure_future(changes[change]())
        await _until_one_waits_for_a_lock(ds, changing)
    with pytest.raises(InvalidInput, match=f"plan {plan.id} is archived"):
        await changing
    after = await ds.tasks.progress(plan.id)
    assert (after.plan.status, replace(after, plan=before.plan)) == ("archived", before)
    assert await ds.tasks.dependencies(other_task.id) == []


# --- progress ---------------------------------------------------------------------------------


async def test_ready_sets_and_progress_follow_the_work(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream

    async def ready() -> list[int]:
        return [t.id for t in await ds.tasks.ready(plan_id=work.plan.id)]

    assert await ready() == [work.a.id, work.d.id]  # priority: a (5) before d (2)
    progress = await ds.tasks.progress(work.plan.id)
    assert progress.phases[1].counts == {"blocked": 1, "pending": 1}
    assert (progress.total, progress.done, progress.complete) == (4, 0, False)
    for task_id, expected in (
        (work.a.id, [work.b.id, work.d.id]),
        (work.b.id, [work.c.id, work.d.id]),
    ):
        await ds.workflow.start_task(task_id)
        await ds.workflow.complete_task(task_id, f"done {task_id}")
        assert await ready() == expected
    design = (await ds.tasks.progress(work.plan.id)).phases[0]
    assert design.complete
    assert design.percent == 100.0
    assert (await ds.queries.phases.get(work.design.id)).status == "completed"
    assert (await ds.queries.phases.get(work.build.id)).status == "pending"
    with pytest.raises(InvalidInput, match="2 unfinished task"):
        await ds.tasks.set_plan_status(work.plan.id, "completed")
    await ds.workflow.start_task(work.c.id)
    assert (await ds.queries.phases.get(work.build.id)).status == "active"
    await ds.workflow.complete_task(work.c.id, "cache written")
    await ds.tasks.skip(work.d.id)  # a skipped task counts as done for its phase
    progress = await ds.tasks.progress(work.plan.id)
    assert (progress.done, progress.percent, progress.complete) == (4, 100.0, True)
    assert await ready() == []
    plan = await ds.tasks.set_plan_status(work.plan.id, "completed")
    assert plan.status == "completed"
    with pytest.raises(InvalidInput, match="is completed; its work can no longer change"):
        await ds.tasks.add_task(work.build.id, "Late addition")
    assert (await ds.tasks.set_plan_status(work.plan.id, "archived")).status == "archived"
    with pytest.raises(IllegalTransition, match="is archived; it cannot become active"):
        await ds.tasks.set_plan_status(work.plan.id, "active")


async def test_phase_status_follows_work_added_and_skipped(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream

    async def phase_status(phase: Phase) -> str:
        return (await ds.queries.phases.get(phase.id)).status

    await ds.tasks.skip(work.d.id)  # skipping work never started does not start the phase
    assert await phase_status(work.build) == "pending"
    for task in (work.a, work.b):
        await ds.workflow.start_task(task.id)
        await ds.workflow.complete_task(task.id, f"finished {task.title}")
    assert await phase_status(work.design) == "completed"
    await ds.tasks.add_task(work.design.id, "One more design question")
    assert await phase_status(work.design) == "active"  # it has work again


async def test_a_plan_is_completed_only_with_every_phase_done(
    integration_devstream: DevStream,
) -> None:
    tasks = integration_devstream.tasks
    plan = await tasks.create_plan("Empty")
    await tasks.set_plan_status(plan.id, "active")
    with pytest.raises(InvalidInput, match="has no phases"):
        await tasks.set_plan_status(plan.id, "completed")
    empty = await tasks.add_phase(plan.id, "Nothing yet")
    with pytest.raises(InvalidInput, match=f"has phases without tasks: #{empty.id} Nothing yet"):
        await tasks.set_plan_status(plan.id, "completed")
    # A phase planned and then not needed is removed, and the plan can be completed.
    work = await tasks.add_phase(plan.id, "The work")
    only = await tasks.add_task(work.id, "The one task")
    await tasks.skip(only.id)
    with pytest.raises(InvalidInput, match="without tasks") as raised:
        await tasks.set_plan_status(plan.id, "completed")
    assert "devstream phase remove PHASE_ID" in raised.value.hint
    with pytest.raises(InvalidInput, match=f"phase {work.id} has tasks"):
        await tasks.remove_phase(work.id)
    await tasks.remove_phase(empty.id)
    assert [p.phase.id for p in (await tasks.progress(plan.id)).phases] == [work.id]
    assert (await tasks.set_plan_status(plan.id, "completed")).status == "completed"
    with pytest.raises(InvalidInput, match="completed"):  # a closed plan keeps its phases
        await tasks.remove_phase(work.id)
    with pytest.raises(NotFound):
        await tasks.remove_phase(empty.id)


@pytest.mark.clock
async def test_retry_clears_the_last_run_and_every_run_is_timed(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream
    await ds.workflow.start_task(work.a.id)
    await ds.workflow.fail_task(work.a.id, "first run failed")
    retried = await ds.tasks.retry(work.a.id)
    assert (retried.started_at, retried.completed_at, retried.duration_s) == (None, None, None)
    await ds.workflow.start_task(work.a.id)
    done = await ds.workflow.complete_task(work.a.id, "   ")  # blank output: nothing to keep
    assert done.memories == []
    assert done.task.duration_s is not None
    figures = (await ds.report())["store"]["task_durations_s"]  # type: ignore[index]
    assert figures["count"] == 2  # both runs, the failed one too
    with pytest.raises(InvalidInput, match="needs the error text"):
        await ds.workflow.fail_task(work.d.id, " ")


async def test_a_skipped_prerequisite_is_dropped_to_unblock_its_dependent(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream
    await ds.tasks.skip(work.a.id)
    assert work.b.id in await ds.tasks.blocked([work.b.id])  # skipped is not completed
    await ds.tasks.remove_dependency(work.b.id, work.a.id)
    assert [t.id for t in await ds.tasks.ready(plan_id=work.plan.id)] == [work.b.id, work.d.id]
    with pytest.raises(NotFound, match="dependency"):
        await ds.tasks.remove_dependency(work.b.id, work.a.id)


async def test_tasks_of_closed_plans_are_never_ready(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream
    await ds.tasks.set_plan_status(work.plan.id, "cancelled")
    assert await ds.tasks.ready(plan_id=work.plan.id) == []
    with pytest.raises(InvalidInput, match="is cancelled"):
        await ds.workflow.start_task(work.a.id)
    with pytest.raises(InvalidInput, match="unknown plan status 'paused'"):
        await ds.tasks.set_plan_status(work.plan.id, "paused")
    with pytest.raises(InvalidInput, match="unknown plan status"):
        await ds.tasks.plans(status="paused")


# --- embedding down ---------------------------------------------------------------------------


@pytest.mark.socket
async def test_the_workflow_completes_while_the_embedder_is_down(
    integration_ollama_devstream: DevStream, fake_ollama: FakeOllama
) -> None:
    ds = integration_ollama_devstream
    work = await make_work(ds)
    fake_ollama.refuse()
    started = await ds.workflow.start_task(work.a.id)
    assert started.context.degraded
    done = await ds.workflow.complete_task(work.a.id, "Captured while Ollama was down")
    assert done.task.status == "completed"
    assert [m.entry.embedding_status for m in done.memories] == ["pending"]
    assert len(done.warnings) == 1
    assert "stored as pending" in done.warnings[0]
    fake_ollama.recover()
    after_cooldown(ds)
    report = await ds.memory.backfill()
    assert (report.embedded, report.remaining) == (1, 0)
    entry = (await ds.memory.entries(MemoryFilter(task_id=work.a.id)))[0]
    assert entry.embedding_status == "embedded"


# --- metrics ----------------------------------------------------------------------------------


async def test_store_figures_of_an_empty_store(integration_devstream: DevStream) -> None:
    store = (await integration_devstream.report())["store"]
    assert store["task_durations_s"] == {"count": 0}  # type: ignore[index]
    assert store["transitions"] == {}  # type: ignore[index]
    assert store["context"] == {"injections": 0, "tokens_injected": 0}  # type: ignore[index]


async def test_workflow_metrics_and_store_figures(
    integration_devstream: DevStream, work: Work
) -> None:
    ds = integration_devstream
    await ds.memory.store("Eviction policy: LRU", "decision", plan_id=work.plan.id)
    started = await ds.workflow.start_task(work.a.id)
    await ds.workflow.complete_task(work.a.id, "done")
    await ds.workflow.start_task(work.d.id)
    await ds.workflow.fail_task(work.d.id, "broke")
    stats = ds.stats()
    counters, latencies = stats["counters"], stats["latencies"]
    assert counters["task.transitions.pending->active"] == 2  # type: ignore[index]
    assert counters["task.transitions.active->failed"] == 1  # type: ignore[index]
    assert counters["context.tokens_injected"] >= started.context.tokens_used  # type: ignore[index]
    for name in ("workflow.start", "workflow.complete", "workflow.fail", "task.duration"):
        assert latencies[name]["count"] >= 1  # type: ignore[index]
    resources = stats["gauges"]["resources"]  # type: ignore[index]
    assert resources["rss_mib"] > 0
    assert resources["cpu_user_s"] > 0
    assert resources["open_connections"] >= 1
    report = await ds.report()
    store = report["store"]
    assert store["tasks"] == {"completed": 1, "failed": 1, "pending": 2}  # type: ignore[index]
    assert store["transitions"] == {  # type: ignore[index]
        "active->completed": 1,
        "active->failed": 1,
        "pending->active": 2,
    }
    assert store["task_durations_s"]["count"] == 2  # type: ignore[index]
    assert store["context"]["injections"] == 2  # type: ignore[index]
    assert store["memories"]["by_content_type"]["error"] == 1  # type: ignore[index]


# --- stored text reads back as it was given --------------------------------------------------

# Any text SQLite and UTF-8 hold exactly: every code point but NUL and lone surrogates.
_STORABLE = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1)


@settings(
    max_examples=30,
    deadline=None,
    # Each example runs in a savepoint of the seam that is rolled back after it.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    title=_STORABLE.map(lambda value: value[:200]).filter(lambda value: bool(value.strip())),
    body=_STORABLE.filter(lambda value: bool(value.strip())),
    output=_STORABLE.filter(lambda value: bool(value.strip())),
)
async def test_stored_text_reads_back_exactly(
    integration_devstream: DevStream, title: str, body: str, output: str
) -> None:
    """Titles are stored stripped (and must then still be non-blank); everything else as
    given, byte for byte: descriptions, memory content, a task's output and error."""
    ds = integration_devstream
    seam = ds.pool.seam
    assert seam is not None
    async with seam.rolled_back():
        plan = await ds.tasks.create_plan(title, body)
        phase = await ds.tasks.add_phase(plan.id, title)
        task = await ds.tasks.add_task(phase.id, title, body)
        first = await ds.tasks.add_task(phase.id, "the second task", body)
        await ds.workflow.start_task(task.id)
        done = await ds.workflow.complete_task(task.id, output)
        await ds.workflow.start_task(first.id)
        failed = await ds.workflow.fail_task(first.id, output)
        stored = await ds.memory.store(body, "context")

        read = await ds.tasks.progress(plan.id)
        assert (read.plan.title, read.plan.description) == (title.strip(), body)
        assert [p.phase.name for p in read.phases] == [title.strip()]
        again = await ds.tasks.task(task.id)
        assert (again.title, again.description) == (title.strip(), body)
        captured = [await ds.memory.get(m.entry.id) for m in done.memories + failed.memories]
        assert [(m.content_type, m.content) for m in captured] == [
            ("output", output),
            ("error", output),
        ]
        assert (await ds.memory.get(stored.entry.id)).content == body


# --- plans, phases, tasks, dependencies and retries against a plain model ----------------------

T = TypeVar("T")


@dataclass
class _ModelTask:
    plan: int
    status: str = "pending"
    retries: int = 0
    waits_on: set[int] = field(default_factory=set)


@dataclass
class _Model:
    """What the rules say the store holds, in plain Python."""

    plans: dict[int, str] = field(default_factory=dict)
    phases: dict[int, int] = field(default_factory=dict)  # phase -> plan
    tasks: dict[int, _ModelTask] = field(default_factory=dict)

    def open(self, plan: int) -> bool:
        return self.plans[plan] in OPEN_PLANS

    def ready(self) -> set[int]:
        return {
            i
            for i, t in self.tasks.items()
            if t.status == "pending"
            and self.open(t.plan)
            and all(self.tasks[d].status == "completed" for d in t.waits_on)
        }

    def reaches(self, start: int, goal: int) -> bool:
        seen, stack = set(), [start]
        while stack:
            node = stack.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(self.tasks[node].waits_on)
        return False


class _TaskRules(RuleBasedStateMachine):
    """Rules drive the real services (on a private loop, each run in a savepoint of the
    seam); after every rule the store must hold what the model holds."""

    ds: DevStream
    loop: asyncio.AbstractEventLoop
    plans = Bundle("plans")
    phases = Bundle("phases")
    tasks = Bundle("tasks")

    def __init__(self) -> None:
        super().__init__()
        self.model = _Model()
        self.phase_tasks: dict[int, list[int]] = {}
        seam = self.ds.pool.seam
        assert seam is not None
        self._savepoint = seam.rolled_back()
        self._run(self._savepoint.__aenter__())

    def teardown(self) -> None:
        self._run(self._savepoint.__aexit__(None, None, None))

    def _run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    def _attempt(self, allowed: bool, work: Awaitable[T]) -> T | None:
        """Run `work`: it must succeed exactly when the model allows it, else be refused
        with a typed error."""
        done: T | None = None
        refusal: DevStreamError | None = None
        try:
            done = self._run(work)
        except DevStreamError as refused:
            refusal = refused
        assert (refusal is None) == allowed, f"model allows it: {allowed}; store: {refusal}"
        return done

    @rule(target=plans)
    def create_plan(self) -> int:
        plan = self._run(self.ds.tasks.create_plan("a plan"))
        self.model.plans[plan.id] = "draft"
        return plan.id

    @rule(target=phases, plan=plans)
    def add_phase(self, plan: int) -> MultipleResults[int]:
        phase = self._attempt(self.model.open(plan), self.ds.tasks.add_phase(plan, "a phase"))
        if phase is None:
            return multiple()
        self.model.phases[phase.id] = plan
        return multiple(phase.id)

    @rule(target=tasks, phase=phases)
    def add_task(self, phase: int) -> MultipleResults[int]:
        plan = self.model.phases[phase]
        task = self._attempt(self.model.open(plan), self.ds.tasks.add_task(phase, "a task"))
        if task is None:
            return multiple()
        self.model.tasks[task.id] = _ModelTask(plan)
        self.phase_tasks.setdefault(phase, []).append(task.id)
        return multiple(task.id)

    @rule(task=tasks, prerequisite=tasks)
    def depend(self, task: int, prerequisite: int) -> None:
        mine, theirs = self.model.tasks[task], self.model.tasks[prerequisite]
        allowed = (
            mine.status == "pending"
            and self.model.open(mine.plan)
            and mine.plan == theirs.plan
            and not self.model.reaches(prerequisite, task)  # one already there: no change
        )
        if self._attempt(allowed, self.ds.tasks.add_dependency(task, prerequisite)):
            mine.waits_on.add(prerequisite)

    @rule(task=tasks)
    def start(self, task: int) -> None:
        state = self.model.tasks[task]
        if self._attempt(task in self.model.ready(), self.ds.workflow.start_task(task)):
            state.status = "active"
            if self.model.plans[state.plan] == "draft":
                self.model.plans[state.plan] = "active"

    @rule(task=tasks, outcome=st.sampled_from(["completed", "failed", "skipped", "retry"]))
    def finish(self, task: int, outcome: str) -> None:
        state = self.model.tasks[task]
        before = {"completed": ("active",), "failed": ("active",), "skipped": ("pending", "active")}
        work: dict[str, Callable[[], Awaitable[object]]] = {
            "completed": lambda: self.ds.workflow.complete_task(task, "done"),
            "failed": lambda: self.ds.workflow.fail_task(task, "it broke"),
            "skipped": lambda: self.ds.tasks.skip(task),
            "retry": lambda: self.ds.tasks.retry(task),
        }
        allowed = self.model.open(state.plan) and state.status in before.get(outcome, ("failed",))
        if self._attempt(allowed, work[outcome]()) is not None:
            state.status, state.retries = (
                ("pending", state.retries + 1) if outcome == "retry" else (outcome, state.retries)
            )

    @rule(plan=plans, status=st.sampled_from(list(PLAN_FLOW)))
    def set_plan_status(self, plan: int, status: str) -> None:
        active = any(t.plan == plan and t.status == "active" for t in self.model.tasks.values())
        allowed = (
            status in PLAN_FLOW[self.model.plans[plan]]
            and (status != "completed" or self._completable(plan))
            and (status in OPEN_PLANS or not active)  # a closed plan's tasks cannot move
        )
        if self._attempt(allowed, self.ds.tasks.set_plan_status(plan, status)):
            self.model.plans[plan] = status

    def _completable(self, plan: int) -> bool:
        phases = [p for p, owner in self.model.phases.items() if owner == plan]
        return bool(phases) and all(
            self.phase_tasks.get(p)
            and all(self.model.tasks[t].status in DONE for t in self.phase_tasks[p])
            for p in phases
        )

    @invariant()
    def the_store_holds_what_the_model_holds(self) -> None:
        stored = self._run(self.ds.tasks.tasks())
        assert {t.id: (t.status, t.retry_count) for t in stored} == {
            i: (t.status, t.retries) for i, t in self.model.tasks.items()
        }
        plans = self._run(self.ds.tasks.plans())
        assert {p.id: p.status for p in plans} == self.model.plans
        assert {t.id for t in self._run(self.ds.tasks.ready())} == self.model.ready()


@pytest.mark.sqlite_only("each example runs on a private copy of the template file")
async def test_plans_and_tasks_follow_a_plain_model_rule_by_rule(
    integration_database_schema: MigratedSchema,
    tmp_path: Path,
    pytestconfig: pytest.Config,
) -> None:
    """Hypothesis's rule-based state machine over the real services; it runs in a thread
    with a loop of its own (rules are synchronous), on a private copy of the schema."""
    path = tmp_path / "rules.db"
    path.write_bytes(template_file(integration_database_schema).read_bytes())

    def machine() -> None:
        loop = loop_factory(requested_loop(pytestconfig))()

        async def opened() -> tuple[DevStream, Any]:
            ds_context = DevStream.open(Settings(db=str(path)), migrate_schema=False)
            ds = await ds_context.__aenter__()
            isolated = ds.pool.isolated()
            await isolated.__aenter__()
            return ds, (ds_context, isolated)

        try:
            ds, (ds_context, isolated) = loop.run_until_complete(opened())
            _TaskRules.ds, _TaskRules.loop = ds, loop
            try:
                # Hypothesis annotates it from 6.170 on; Python 3.10 gets 6.168.
                run_state_machine_as_test(  # type: ignore[no-untyped-call, unused-ignore]
                    _TaskRules,
                    settings=settings(
                        max_examples=15,
                        stateful_step_count=25,
                        deadline=None,
                        # Every step runs the real services on a database.
                        suppress_health_check=[HealthCheck.too_slow],
                    ),
                )
            finally:
                loop.run_until_complete(isolated.__aexit__(None, None, None))
                loop.run_until_complete(ds_context.__aexit__(None, None, None))
        finally:
            loop.close()

    await asyncio.to_thread(machine)
