"""Memory and database: storage, embeddings, hybrid search, links, the pipeline, degradation."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_httpx import HTTPXMock
from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from devstream import DevStream, Settings
from devstream.db.memory_store import MemoryFilter
from devstream.db.pg_search import BUILD_LIST, GRAPH_LINKS, VectorIndex
from devstream.db.pool import ConnectionPool
from devstream.db.records import MemoryEntry, MicroTask, Plan
from devstream.db.types import utcnow
from devstream.errors import ConstraintViolation, DimensionMismatch, InvalidInput, NotFound
from devstream.memory.context import approximate_tokens, assemble
from devstream.memory.database_search import BUILD_RETRY_S, DatabaseSearcher
from devstream.memory.hashing import HashingEmbedder
from devstream.memory.index import MemoryIndex
from devstream.memory.ollama import OllamaEmbedder
from devstream.memory.search import SearchWeights
from devstream.memory.service import NewMemory
from devstream.memory.vectors import Vectors
from devstream.testing import FakeOllama, deterministic_embedding
from devstream.testing.ollama import CONTEXT_LENGTH_ERROR
from tests.integration.conftest import OLLAMA_DIMENSION, after_cooldown, ollama_devstream
from tests.support import PROCESS_WAIT_S, ManualClock, devstream_cli, single_task

TEXT_ONLY = SearchWeights(text=1.0, vector=0.0)
VECTOR_ONLY = SearchWeights(text=0.0, vector=1.0)


# --- storage and retrieval ----------------------------------------------------------------


async def test_store_get_and_access_counts(integration_devstream: DevStream) -> None:
    memory = integration_devstream.memory
    result = await memory.store(
        "Checkpoints move WAL pages back into the database file", "learning"
    )
    assert result.created
    assert result.embedded
    entry = result.entry
    assert entry.access_count == 0
    assert entry.keywords.split()[:3] == ["checkpoints", "move", "wal"]

    assert (await memory.get(entry.id)).access_count == 1
    assert (await memory.get(entry.id)).access_count == 2
    with pytest.raises(NotFound):
        await memory.get(entry.id + 1000)

    # Searching is browsing; being injected into a context is a retrieval.
    assert (await memory.search("checkpoints")).hits[0].entry.access_count == 2
    assert (await assemble(memory, "checkpoints", 100)).memory_ids == [entry.id]
    assert (await memory.get(entry.id)).access_count == 4


async def test_same_content_in_the_same_scope_is_stored_once(
    integration_devstream: DevStream, integration_sample_plan: Plan
) -> None:
    memory = integration_devstream.memory
    first = await memory.store("Prefer small commits", "decision")
    again = await memory.store("Prefer small commits", "decision")
    elsewhere = await memory.store(
        "Prefer small commits", "decision", plan_id=integration_sample_plan.id
    )
    assert (again.created, again.entry.id) == (False, first.entry.id)
    assert elsewhere.created
    assert elsewhere.entry.id != first.entry.id

    batch = await memory.store_many(
        [NewMemory("one", "context"), NewMemory("one", "context"), NewMemory("two", "context")]
    )
    assert [r.created for r in batch] == [True, True, True]
    assert batch[0].entry.id == batch[1].entry.id != batch[2].entry.id
    assert len(await memory.entries()) == 4


async def test_a_deleted_memorys_id_is_never_given_to_another(
    integration_devstream: DevStream,
) -> None:
    """A context injection, or a client, that kept the id must not find another memory."""
    memory = integration_devstream.memory
    newest = (await memory.store("the newest, then deleted", "context")).entry
    await memory.delete(newest.id)
    after = (await memory.store("stored after it", "context")).entry
    assert after.id > newest.id


class _CountingEmbedder:
    """A user's own embedder (the offline one underneath), which does not say whether
    embedding is costly."""

    def __init__(self) -> None:
        self._inner = HashingEmbedder()
        self.model, self.dimension = self._inner.model, self._inner.dimension
        self.texts: list[str] = []
        self.meanwhile: Callable[[], Awaitable[object]] | None = None  # runs as it embeds

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts.extend(texts)
        if self.meanwhile is not None:
            await self.meanwhile()
        return await self._inner.embed(texts)

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("costly", [None, False], ids=["not-said", "cheap"])
async def test_a_store_looks_for_duplicates_before_embedding_unless_embedding_is_cheap(
    integration_devstream: DevStream, integration_memory_index: MemoryIndex, costly: bool | None
) -> None:
    embedder = _CountingEmbedder()
    if costly is not None:
        embedder.costly = costly  # type: ignore[attr-defined]
    base = integration_devstream
    memory = DevStream(base.settings, base.pool, embedder, memory_index=integration_memory_index)
    first = await memory.memory.store("embedded once", "context")
    again = await memory.memory.store("embedded once", "context")
    assert (again.created, again.entry.id) == (False, first.entry.id)
    assert embedder.texts == ["embedded once"] * (1 if costly is None else 2)


async def test_content_found_stored_then_deleted_before_the_write_is_stored_again(
    integration_devstream: DevStream, integration_memory_index: MemoryIndex
) -> None:
    """Between a store's look for duplicates (before embedding) and its write, another
    writer deletes what the look found: the content is stored again, with the vector it came
    with or else waiting for one, and the result says so."""
    embedder = _CountingEmbedder()
    embedder.costly = True  # type: ignore[attr-defined]
    base = integration_devstream
    memory = DevStream(base.settings, base.pool, embedder, memory_index=integration_memory_index)
    vector = (await embedder.embed(["a vector of its own"]))[0]
    found = NewMemory("found, then deleted", "context")
    given = NewMemory("given its vector, then deleted", "context", embedding=vector)
    doomed = [r.entry.id for r in await memory.memory.store_many([found, given])]
    embedder.texts.clear()

    async def delete_them() -> None:
        for entry_id in doomed:
            await memory.memory.delete(entry_id)

    embedder.meanwhile = delete_them
    again, again_given, new = await memory.memory.store_many(
        [found, given, NewMemory("new", "context")]
    )
    assert embedder.texts == ["new"]  # what the look found was not embedded again
    assert (again.created, again.embedded, again.entry.embedding_status) == (
        True,
        False,
        "pending",
    )
    assert again.warning is not None
    assert "deleted" in again.warning
    assert (again_given.created, again_given.embedded, again_given.warning) == (True, True, None)
    assert again_given.entry.embedding == vector.tobytes()
    assert (new.created, new.embedded) == (True, True)
    stored = await memory.memory.entries()
    assert sorted(e.content for e in stored) == [found.content, given.content, "new"]


@pytest.mark.postgresql_only("writers store at once there, and each round trip counts")
async def test_a_lone_store_is_one_statement_outside_any_transaction_block(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    sent: list[tuple[str, bool]] = []

    def after_execute(conn: Connection, _cursor: object, statement: str, *_: object) -> None:
        driver = conn.connection.driver_connection
        assert driver is not None
        sent.append((statement, driver.is_in_transaction()))

    engine = ds.pool.engine.sync_engine
    event.listen(engine, "after_cursor_execute", after_execute)
    try:
        result = await ds.memory.store("one round trip", "context")
    finally:
        event.remove(engine, "after_cursor_execute", after_execute)
    assert (result.created, result.embedded) == (True, True)
    assert [("devstream_store_memories(" in statement, began) for statement, began in sent] == [
        (True, False)
    ]
    assert (await ds.memory.get(result.entry.id)).content == "one round trip"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (NewMemory("   ", "context"), "empty"),
        (NewMemory("x" * 100_001, "context"), "maximum is 100,000"),
        (NewMemory("fine", "poem"), "unknown content type 'poem'"),
        (NewMemory("nul \x00 inside", "context"), "NUL"),
        (NewMemory("lone \ud800 surrogate", "context"), "lone surrogate"),
        (NewMemory("nan", "context", embedding=[float("nan")] * 768), "NaN, infinite"),
        (NewMemory("inf", "context", embedding=[float("inf")] * 768), "NaN, infinite"),
        # Just past float32's largest value: infinite once stored.
        (NewMemory("beyond", "context", embedding=[3.4028235677973366e38] * 768), "out-of-range"),
        # Finite, but its length is not: it would normalise to zeros and match nothing.
        (NewMemory("huge", "context", embedding=[1e30] * 768), "length overflows"),
        (NewMemory("short", "context", embedding=[0.1] * 3), "3 values"),
    ],
    ids=[
        "blank",
        "too-long",
        "unknown-type",
        "nul",
        "surrogate",
        "nan",
        "inf",
        "beyond-float32",
        "length-overflows",
        "wrong-size",
    ],
)
async def test_bad_input_is_refused_before_anything_is_written(
    integration_devstream: DevStream, item: NewMemory, message: str
) -> None:
    memory = integration_devstream.memory
    await memory.store("already here", "context")
    with pytest.raises(InvalidInput, match=message):
        await memory.store_many([NewMemory("valid, but in a bad batch", "context"), item])
    assert [entry.content for entry in await memory.entries()] == ["already here"]


async def test_listing_filters(
    integration_devstream: DevStream,
    integration_memory_entries: list[MemoryEntry],
    integration_sample_plan: Plan,
    integration_sample_task: MicroTask,
) -> None:
    memory = integration_devstream.memory
    by_plan = await memory.entries(MemoryFilter(plan_id=integration_sample_plan.id))
    assert {e.content_type for e in by_plan} == {"decision", "code", "learning"}
    by_task = await memory.entries(MemoryFilter(task_id=integration_sample_task.id))
    assert [e.content_type for e in by_task] == ["code"]
    typed = await memory.entries(MemoryFilter(frozenset({"error", "context"})))
    assert {e.content_type for e in typed} == {"error", "context"}
    assert len(await memory.entries(limit=2, offset=5)) == 1


# --- embeddings: persistence and loading --------------------------------------------------


async def test_embeddings_round_trip_exactly_and_record_their_model(
    integration_devstream: DevStream,
) -> None:
    memory = integration_devstream.memory
    vector = np.random.default_rng(7).normal(size=768).astype(np.float32)
    entry = (await memory.store("a precomputed vector", "context", embedding=vector)).entry

    assert entry.embedding == vector.astype("<f4").tobytes()
    assert np.array_equal(np.frombuffer(entry.embedding, dtype="<f4"), vector)
    assert (entry.embedding_model, entry.embedding_dim, entry.embedding_status) == (
        memory.embedder.model,
        768,
        "embedded",
    )


@pytest.mark.sqlite_only("the in-process index")
async def test_a_new_process_loads_the_index_from_the_store(
    integration_devstream: DevStream, integration_memory_entries: list[MemoryEntry]
) -> None:
    fresh = DevStream(integration_devstream.settings, integration_devstream.pool)
    assert fresh.memory.index.footprint()["vectors"] == 0
    result = await fresh.memory.search("readers never block the writer", weights=VECTOR_ONLY)
    assert fresh.memory.index.footprint()["vectors"] == len(integration_memory_entries)
    assert result.hits[0].entry.id == integration_memory_entries[0].id
    assert result.hits[0].similarity is not None
    assert result.hits[0].similarity > 0.5


# --- search -------------------------------------------------------------------------------


async def test_keyword_vector_and_hybrid_search(
    integration_devstream: DevStream, integration_memory_entries: list[MemoryEntry]
) -> None:
    memory = integration_devstream.memory
    triggers = integration_memory_entries[2]

    keyword = await memory.search("triggers", weights=TEXT_ONLY)
    assert [hit.entry.id for hit in keyword.hits] == [triggers.id]
    assert keyword.hits[0].text_score is not None

    vector = await memory.search("index kept in step by triggers", weights=VECTOR_ONLY)
    assert vector.hits[0].entry.id == triggers.id
    assert all(hit.similarity is not None for hit in vector.hits)
    assert [h.similarity for h in vector.hits] == sorted(
        (h.similarity for h in vector.hits if h.similarity is not None), reverse=True
    )

    hybrid = await memory.search("FTS5 index triggers")
    top = hybrid.hits[0]
    assert top.entry.id == triggers.id
    assert top.text_score is not None
    assert top.similarity is not None
    assert top.score == pytest.approx(2 / 61)  # first in both lists
    assert not hybrid.degraded


@pytest.mark.sqlite_only(
    "PostgreSQL's ts_rank weighs every word alike: it has no document frequency"
)
async def test_a_rare_word_leads_when_the_other_query_word_is_in_most_memories(
    integration_devstream: DevStream,
) -> None:
    """Rows that match only a word in most of the store (weighed at almost nothing) must not
    bury the one row that holds the query's rare identifier, on either path."""
    memory = integration_devstream.memory
    parts = ["parser", "cache", "importer", "scheduler", "migration", "index"]
    await memory.store_many(
        [NewMemory(f"the {parts[n % 6]} raised an error in case {n}", "error") for n in range(40)]
    )
    rare = await memory.store("the uploader failed with ECONNRESET behind the proxy", "error")
    for exact in (False, True):
        hits = (await memory.search("ECONNRESET error", exact=exact)).hits
        assert hits[0].entry.id == rare.entry.id, [h.entry.content for h in hits[:3]]
        assert len(hits) == 10, "rows of the common word still come, on their similarity"


@pytest.mark.clock
async def test_search_filters_and_similarity_threshold(
    integration_devstream: DevStream,
    integration_memory_entries: list[MemoryEntry],
    integration_sample_plan: Plan,
    integration_sample_task: MicroTask,
) -> None:
    memory = integration_devstream.memory
    query = "writer readers pool WAL backfill embedding"

    async def ids(**filters: object) -> set[int]:
        result = await memory.search(query, limit=20, filters=MemoryFilter(**filters))  # type: ignore[arg-type]
        return {hit.entry.id for hit in result.hits}

    everything = await ids()
    by_type = {e.id for e in integration_memory_entries if e.content_type == "error"}
    assert await ids(content_types=frozenset({"error"})) == by_type & everything
    plan_ids = {e.id for e in integration_memory_entries if e.plan_id == integration_sample_plan.id}
    assert await ids(plan_id=integration_sample_plan.id) == plan_ids & everything
    assert await ids(task_id=integration_sample_task.id) <= {integration_memory_entries[1].id}
    assert await ids(created_after=utcnow() + timedelta(minutes=1)) == set()
    assert await ids(created_before=utcnow() + timedelta(minutes=1)) == everything
    assert await ids(embedding_status="pending") == set()

    strict = await memory.search(query, limit=20, min_similarity=0.99)
    assert strict.hits == []


@pytest.mark.usefixtures("integration_memory_entries")  # not an argument: its repr is huge
@settings(
    max_examples=40,
    deadline=None,
    # Searches only: the fixture's entries are the same for every example.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    threshold=st.floats(min_value=-1.0, max_value=1.0),
    query=st.sampled_from(["writer readers WAL", "sqlite connect timeout", "triggers delete"]),
)
async def test_a_threshold_applies_to_raw_similarity(
    integration_devstream: DevStream, threshold: float, query: str
) -> None:
    """Every hit has at least the threshold's cosine similarity, reported as it is (an entry
    without a vector of this model cannot be judged and stays); every hit of the same search
    without a threshold that has it is still found."""
    memory = integration_devstream.memory
    everything = (await memory.search(query, limit=50)).hits
    kept = (await memory.search(query, limit=50, min_similarity=threshold)).hits
    similarity = {hit.entry.id: hit.similarity for hit in everything}
    assert all(h.similarity is None or h.similarity >= threshold for h in kept)
    assert all(similarity.get(h.entry.id, h.similarity) == h.similarity for h in kept)
    passing = {i for i, s in similarity.items() if s is not None and s >= threshold}
    assert {h.entry.id for h in kept} >= passing


@pytest.mark.parametrize(
    "query", ['"', "NEAR(", "*", "OR OR", "-", "content:WAL", "x" * 10_000, "\x00", "\ud800"]
)
async def test_hostile_queries_are_plain_text(
    integration_devstream: DevStream, integration_memory_entries: list[MemoryEntry], query: str
) -> None:
    result = await integration_devstream.memory.search(query)
    assert all(hit.entry.id in {e.id for e in integration_memory_entries} for hit in result.hits)
    wal = await integration_devstream.memory.search(f'{query} "WAL" NEAR(', weights=TEXT_ONLY)
    assert integration_memory_entries[0].id in {hit.entry.id for hit in wal.hits}


# --- memory and tasks ---------------------------------------------------------------------


async def test_memories_outlive_their_task_and_plan(
    integration_devstream: DevStream,
    integration_memory_entries: list[MemoryEntry],
    integration_sample_plan: Plan,
    integration_sample_task: MicroTask,
) -> None:
    ds = integration_devstream
    code = integration_memory_entries[1]
    assert (code.plan_id, code.task_id) == (integration_sample_plan.id, integration_sample_task.id)

    await ds.queries.tasks.delete(integration_sample_task.id)
    assert (await ds.memory.get(code.id)).task_id is None
    await ds.queries.plans.delete(integration_sample_plan.id)
    survivors = await ds.memory.entries()
    assert len(survivors) == len(integration_memory_entries)
    assert all(entry.plan_id is None and entry.task_id is None for entry in survivors)
    scoped = await ds.memory.search("WAL", filters=MemoryFilter(plan_id=integration_sample_plan.id))
    assert scoped.hits == []


async def test_links_must_point_at_existing_rows_that_agree(
    integration_devstream: DevStream,
) -> None:
    """A missing plan, phase or task is named; a task of another phase or plan, or a phase
    of another plan, is refused (a search of either plan would miss the memory)."""
    ds = integration_devstream
    a, b = await single_task(ds, "In plan A"), await single_task(ds, "In plan B")
    plan_a = (await ds.queries.phases.get(a.phase_id)).plan_id
    plan_b = (await ds.queries.phases.get(b.phase_id)).plan_id
    refusals: list[tuple[dict[str, Any], tuple[type[Exception], str]]] = [
        ({"task_id": 999_999}, (NotFound, "task 999999 not found")),
        ({"phase_id": 999_999}, (NotFound, "phase 999999 not found")),
        ({"plan_id": 999_999}, (NotFound, "plan 999999 not found")),
        ({"plan_id": plan_a, "task_id": b.id}, (InvalidInput, f"in plan {plan_b}, not plan")),
        ({"phase_id": a.phase_id, "task_id": b.id}, (InvalidInput, "in phase")),
        ({"plan_id": plan_b, "phase_id": a.phase_id}, (InvalidInput, f"in plan {plan_a}, not")),
    ]
    for links, (error, says) in refusals:
        with pytest.raises(error, match=says):
            await ds.memory.store("linked", "context", **links)
    assert await ds.memory.entries() == []
    whole: dict[str, Any] = {"plan_id": plan_b, "phase_id": b.phase_id, "task_id": b.id}
    assert (await ds.memory.store("linked", "context", **whole)).created


async def test_a_memory_linked_to_a_task_or_phase_alone_is_linked_to_what_holds_it(
    integration_devstream: DevStream,
) -> None:
    """Linked to a task alone, a memory is in its phase and plan too: a search of the plan
    finds it, and the same content linked with the plan named is the same memory."""
    ds = integration_devstream
    task = await single_task(ds, "Holds the memory")
    plan_id = (await ds.queries.phases.get(task.phase_id)).plan_id
    by_task = await ds.memory.store("kept with its task", "context", task_id=task.id)
    entry = by_task.entry
    assert (entry.plan_id, entry.phase_id, entry.task_id) == (plan_id, task.phase_id, task.id)
    again = await ds.memory.store("kept with its task", "context", plan_id=plan_id, task_id=task.id)
    assert (again.created, again.entry.id) == (False, entry.id)
    found = await ds.memory.search("kept with its task", filters=MemoryFilter(plan_id=plan_id))
    assert [hit.entry.id for hit in found.hits] == [entry.id]
    by_phase = (
        await ds.memory.store("kept with its phase", "context", phase_id=task.phase_id)
    ).entry
    assert (by_phase.plan_id, by_phase.phase_id, by_phase.task_id) == (plan_id, task.phase_id, None)
    # One batch mixes both kinds of link; a missing task is still named, and nothing written.
    with pytest.raises(NotFound, match="task 999999 not found"):
        await ds.memory.store_many(
            [NewMemory("a", "context", task_id=task.id), NewMemory("b", "context", task_id=999_999)]
        )
    assert len(await ds.memory.entries()) == 2


# --- the content pipeline, end to end -----------------------------------------------------


async def test_content_pipeline_end_to_end(
    integration_devstream: DevStream, integration_sample_plan: Plan
) -> None:
    memory = integration_devstream.memory
    stored = await memory.store(
        "Quorum reads need a majority of replicas to answer",
        "learning",
        plan_id=integration_sample_plan.id,
    )
    entry = stored.entry
    assert "quorum" in entry.keywords.split()
    assert (await memory.search("quorum", weights=TEXT_ONLY)).hits[0].entry.id == entry.id
    assert (await memory.search("majority replicas", weights=VECTOR_ONLY)).hits[
        0
    ].entry.id == entry.id

    context = await assemble(memory, "quorum reads", 200, plan_id=integration_sample_plan.id)
    assert context.memory_ids == [entry.id]
    assert "Quorum reads need a majority" in context.text

    updated = await memory.update(entry.id, content="Leases let a leader serve reads alone")
    assert updated.content_hash != entry.content_hash
    assert (await memory.search("quorum", weights=TEXT_ONLY)).hits == []
    assert (await memory.search("leases", weights=TEXT_ONLY)).hits[0].entry.id == entry.id
    assert (await memory.search("leader leases", weights=VECTOR_ONLY)).hits[0].entry.id == entry.id

    retyped = await memory.update(entry.id, content_type="decision")
    assert retyped.content == updated.content
    assert retyped.embedding == updated.embedding
    decisions = await memory.search("leases", filters=MemoryFilter(frozenset({"decision"})))
    assert [hit.entry.id for hit in decisions.hits] == [entry.id]

    await memory.delete(entry.id)
    assert (await memory.search("leases leader")).hits == []
    with pytest.raises(NotFound):
        await memory.delete(entry.id)


async def test_context_respects_budget_and_type_cap(
    integration_devstream: DevStream, integration_memory_entries: list[MemoryEntry]
) -> None:
    memory = integration_devstream.memory
    query = "WAL writer readers backfill embedding triggers"
    full = await assemble(memory, query, 10_000)
    assert len(full.included) == len(integration_memory_entries)

    budget = full.included[0].tokens + full.included[1].tokens
    tight = await assemble(memory, query, budget)
    assert approximate_tokens(tight.text) <= tight.tokens_used <= budget
    assert 1 <= len(tight.included) < len(full.included)
    assert all(f"#{item.memory_id}]" in tight.text for item in tight.included)

    capped = await assemble(memory, query, 10_000, per_type_cap=1)
    kinds = [item.content_type for item in capped.included]
    assert len(kinds) == len(set(kinds))
    with pytest.raises(InvalidInput):
        await assemble(memory, query, 0)


# --- the shared vector index across rolled-back tests -------------------------------------


@pytest.mark.xdist_group("isolation")
class TestIndexIsolation:
    """Both tests share the worker's index; each writes a vector that is rolled back after it.
    Whichever runs second must never see the other's vector."""

    async def _write_and_check(self, ds: DevStream, mine: str, theirs: str) -> None:
        assert (await ds.memory.search(theirs, weights=VECTOR_ONLY)).hits == []
        entry = (await ds.memory.store(f"{mine} observations", "learning")).entry
        hits = (await ds.memory.search(mine, weights=VECTOR_ONLY)).hits
        assert [hit.entry.id for hit in hits] == [entry.id]

    async def test_first(
        self, integration_devstream: DevStream, integration_memory_index: MemoryIndex
    ) -> None:
        _shares_the_index(integration_devstream, integration_memory_index)
        await self._write_and_check(integration_devstream, "quasar", "magnetar")

    async def test_second(
        self, integration_devstream: DevStream, integration_memory_index: MemoryIndex
    ) -> None:
        _shares_the_index(integration_devstream, integration_memory_index)
        await self._write_and_check(integration_devstream, "magnetar", "quasar")


def _shares_the_index(ds: DevStream, index: MemoryIndex) -> None:
    """On SQLite the worker's one index serves every test (PostgreSQL searches the database,
    where the rollback is the server's)."""
    if ds.pool.on_sqlite:
        assert ds.memory.index is index


async def test_index_never_serves_a_vector_rolled_back_in_a_savepoint(
    integration_devstream: DevStream,
) -> None:
    memory = integration_devstream.memory
    await memory.store("pulsar timing arrays", "learning")
    with pytest.raises(RuntimeError):
        async with integration_devstream.pool.write_transaction() as conn:
            await conn.exec_driver_sql("DELETE FROM memory_entries")
            raise RuntimeError
    hits = (await memory.search("pulsar timing", weights=VECTOR_ONLY)).hits
    assert [hit.entry.content for hit in hits] == ["pulsar timing arrays"]

    async with integration_devstream.pool.write_transaction() as conn:
        await conn.exec_driver_sql("DELETE FROM memory_entries")  # a write the index did not see
    assert (await memory.search("pulsar timing", weights=VECTOR_ONLY)).hits == []


# --- PostgreSQL's vector index: built beside the writers and searchers --------------------

ON_POSTGRESQL = pytest.mark.postgresql_only("the vector index PostgreSQL builds in the database")
_ADVISORY_LOCKS = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_BUILD_WAITING = text(
    "SELECT count(*) FROM pg_stat_progress_create_index WHERE phase LIKE 'waiting for %' "
    "AND datid = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_INDEX_STATE = text(
    "SELECT i.indisvalid, a.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_am a ON a.oid = c.relam WHERE i.indexrelid = to_regclass(:name)"
)


_INDEX_OPTIONS = text("SELECT reloptions FROM pg_class WHERE oid = to_regclass(:name)")


def _index_name(ds: DevStream) -> str:
    return VectorIndex(ds.memory.embedder.model, ds.memory.embedder.dimension).name


async def _vector_index(ds: DevStream) -> tuple[bool, str] | None:
    """(valid, access method) of the embedder's vector index, or None if there is none."""
    async with ds.pool.read_statement() as conn:
        row = (await conn.execute(_INDEX_STATE, {"name": _index_name(ds)})).first()
    return None if row is None else (bool(row[0]), str(row[1]))


async def _until_a_build_waits(ds: DevStream) -> None:
    """Until an index build in this database waits for the transactions older than it."""
    deadline = asyncio.get_running_loop().time() + PROCESS_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        async with ds.pool.read_statement() as conn:
            if await conn.scalar(_BUILD_WAITING):
                return
        await asyncio.sleep(0.05)
    pytest.fail(f"no index build was waiting for the open write within {PROCESS_WAIT_S:g} s")


async def _advisory_locks(ds: DevStream) -> int:
    async with ds.pool.read_statement() as conn:
        return int(await conn.scalar(_ADVISORY_LOCKS) or 0)


@asynccontextmanager
async def _an_open_write(ds: DevStream) -> AsyncIterator[None]:
    """A write transaction left open: an index build waits for it to end. A plain CREATE
    INDEX would queue for the table's lock meanwhile, and every write after it behind that."""
    async with ds.pool.write_transaction() as writing:
        await writing.execute(text("LOCK TABLE memory_entries IN ROW EXCLUSIVE MODE"))
        yield


@ON_POSTGRESQL
async def test_writers_and_other_searchers_go_on_while_the_vector_index_is_built(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    await ds.memory.store_many([NewMemory(f"build note {n}", "context") for n in range(20)])
    patient = replace(ds.settings, busy_timeout_ms=int(PROCESS_WAIT_S * 1000))
    async with (
        DevStream.open(patient, migrate_schema=False) as builder,
        DevStream.open(ds.settings, migrate_schema=False) as other,
    ):
        # The write is open before the build starts: a build that began first could end
        # before the write took its lock, and then wait for nothing.
        async with _an_open_write(ds):
            building = asyncio.create_task(builder.memory.search("build note"))
            try:
                await _until_a_build_waits(ds)
                stored = await asyncio.wait_for(
                    other.memory.store("a note stored during the build", "context"),
                    PROCESS_WAIT_S,
                )
                found = await asyncio.wait_for(
                    other.memory.search("stored during the build"), PROCESS_WAIT_S
                )
                assert found.hits[0].entry.id == stored.entry.id, "answered by a full scan"
                assert not building.done(), "the build did not wait for the open write"
                assert await _vector_index(ds) == (False, "hnsw"), "not valid until built"
            except BaseException:
                building.cancel()
                raise
        result = await asyncio.wait_for(building, PROCESS_WAIT_S)
    assert len(result.hits) == 10
    assert await _vector_index(ds) == (True, "hnsw")
    assert await _advisory_locks(ds) == 0, "the build's lock outlived it"


@ON_POSTGRESQL
async def test_a_build_kept_waiting_past_lock_timeout_gives_up_until_a_later_search(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    await ds.memory.store_many([NewMemory(f"patient note {n}", "context") for n in range(5)])
    impatient = replace(ds.settings, busy_timeout_ms=100)
    async with DevStream.open(impatient, migrate_schema=False) as searcher:
        in_database = searcher.memory.searcher
        assert isinstance(in_database, DatabaseSearcher)
        clock = in_database.clock = ManualClock()
        async with _an_open_write(ds):
            result = await asyncio.wait_for(searcher.memory.search("patient note"), PROCESS_WAIT_S)
            assert len(result.hits) == 5, "answered by a full scan"
            assert await _vector_index(ds) == (False, "hnsw"), "a build given up leaves it invalid"
            assert await _advisory_locks(ds) == 0, "the build's lock outlived it"
        clock.advance(BUILD_RETRY_S - 1)
        assert len((await searcher.memory.search("patient note")).hits) == 5
        assert await _vector_index(ds) == (False, "hnsw"), "tried again before BUILD_RETRY_S"
        clock.advance(1)
        assert len((await searcher.memory.search("patient note")).hits) == 5
    assert await _vector_index(ds) == (True, "hnsw")


@ON_POSTGRESQL
async def test_catching_up_makes_the_vector_index_before_any_search(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    await ds.memory.store("imported before anyone searched", "context")
    assert await _vector_index(ds) is None
    await ds.memory.catch_up()  # as `devstream import` does once it has written
    assert await _vector_index(ds) == (True, "hnsw")
    async with ds.pool.read_statement() as conn:
        options = await conn.scalar(_INDEX_OPTIONS, {"name": _index_name(ds)})
    assert sorted(options) == [f"ef_construction={BUILD_LIST}", f"m={GRAPH_LINKS}"]


@ON_POSTGRESQL
async def test_a_vector_index_build_cut_short_is_dropped_and_built_again(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    await ds.memory.store_many([NewMemory(f"rebuilt note {n}", "context") for n in range(5)])
    name = _index_name(ds)
    # An invalid index under the vector index's name, as a concurrent build cut short leaves.
    with pytest.raises(ConstraintViolation):
        async with ds.pool.autocommit() as conn:
            await conn.execute(
                text(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON memory_entries (content_type)")
            )
    assert await _vector_index(ds) == (False, "btree")
    assert len((await ds.memory.search("rebuilt note")).hits) == 5
    assert await _vector_index(ds) == (True, "hnsw")


# --- Ollama: mocked in-process, and a real server over sockets ----------------------------


async def test_ollama_vectors_are_stored_as_served(
    integration_connection_pool: ConnectionPool,
    integration_config: Settings,
    integration_devstream: DevStream,
    integration_mock_ollama_healthy: str,
    httpx_mock: HTTPXMock,
) -> None:
    ds = ollama_devstream(
        integration_connection_pool, integration_config, integration_mock_ollama_healthy
    )
    results = await ds.memory.store_many(
        [NewMemory("alpha notes", "context"), NewMemory("beta notes", "context")]
    )
    for result, content in zip(results, ["alpha notes", "beta notes"], strict=True):
        served = np.asarray(deterministic_embedding(content, OLLAMA_DIMENSION), dtype="<f4")
        assert result.entry.embedding == served.tobytes()
        assert result.entry.embedding_model == "embeddinggemma"
    requests = httpx_mock.get_requests()
    assert [json.loads(r.content)["input"] for r in requests] == [["alpha notes", "beta notes"]]
    hits = (await ds.memory.search("beta notes", weights=VECTOR_ONLY)).hits
    assert hits[0].entry.id == results[1].entry.id
    assert hits[0].similarity == pytest.approx(1.0, abs=1e-5)


async def test_another_model_is_never_compared_until_reembedded(
    integration_connection_pool: ConnectionPool,
    integration_config: Settings,
    integration_devstream: DevStream,
    integration_memory_entries: list[MemoryEntry],
    integration_mock_ollama_responses: str,
) -> None:
    ds = ollama_devstream(
        integration_connection_pool, integration_config, integration_mock_ollama_responses
    )
    before = await ds.memory.search("WAL journal mode", weights=VECTOR_ONLY)
    assert before.hits == []  # the hashing model's vectors are not this model's
    assert await ds.memory.waiting(other_models=True) == len(integration_memory_entries)
    # A backfill embeds what is pending only: converting is reembed's work.
    assert await ds.memory.waiting() == 0
    assert (await ds.memory.backfill()).embedded == 0

    report = await ds.memory.reembed(batch_size=4)
    assert (report.embedded, report.remaining, report.error) == (
        len(integration_memory_entries),
        0,
        None,
    )
    entries = await ds.memory.entries()
    assert {(e.embedding_model, e.embedding_dim) for e in entries} == {("embeddinggemma", 768)}
    text = integration_memory_entries[0].content
    after = await ds.memory.search(text, weights=VECTOR_ONLY)
    assert after.hits[0].entry.id == integration_memory_entries[0].id


async def test_reembed_goes_64_entries_at_a_time_by_default(
    integration_connection_pool: ConnectionPool,
    integration_config: Settings,
    integration_devstream: DevStream,
    integration_mock_ollama_responses: str,
) -> None:
    notes = [NewMemory(f"reembed note {n}", "context") for n in range(65)]
    await integration_devstream.memory.store_many(notes)
    ds = ollama_devstream(
        integration_connection_pool, integration_config, integration_mock_ollama_responses
    )
    progress: list[tuple[int, int]] = []
    report = await ds.memory.reembed(progress=lambda done, total: progress.append((done, total)))
    assert (report.embedded, report.remaining) == (65, 0)
    assert progress == [(64, 65), (65, 65)]
    await ds.memory.embedder.aclose()


@pytest.mark.socket
async def test_outage_degrades_then_backfill_recovers(
    integration_ollama_devstream: DevStream, fake_ollama: FakeOllama
) -> None:
    ds = integration_ollama_devstream
    fake_ollama.refuse()

    stored = [
        await ds.memory.store(f"incident note {n} about the outage", "error") for n in range(3)
    ]
    assert all(not r.embedded and r.entry.embedding_status == "pending" for r in stored)
    assert all(r.warning and "pending" in r.warning for r in stored)
    during = await ds.memory.search("incident outage")
    assert during.degraded
    assert during.reason is not None
    assert {hit.entry.id for hit in during.hits} == {r.entry.id for r in stored}
    assert ds.stats()["counters"]["memory.search.degraded"] == 1  # type: ignore[index]

    fake_ollama.recover()
    after_cooldown(ds)
    progress: list[tuple[int, int]] = []
    report = await ds.memory.backfill(batch_size=2, progress=lambda d, t: progress.append((d, t)))
    assert (report.embedded, report.remaining, report.error) == (3, 0, None)
    assert progress == [(2, 3), (3, 3)]
    after = await ds.memory.search("incident outage")
    assert not after.degraded
    assert all(hit.similarity is not None for hit in after.hits)
    assert await ds.memory.waiting() == 0


@pytest.mark.socket
async def test_wrong_dimension_is_a_typed_error_not_a_corrupt_index(
    integration_ollama_devstream: DevStream, fake_ollama: FakeOllama
) -> None:
    ds = integration_ollama_devstream
    fake_ollama.wrong_dimension(384)
    result = await ds.memory.store("vectors of the wrong size", "context")
    assert result.entry.embedding_status == "pending"
    assert result.warning is not None
    assert "384" in result.warning

    after_cooldown(ds)
    report = await ds.memory.backfill()
    assert report.embedded == 0
    assert report.remaining == 1
    assert report.error is not None
    assert "384" in report.error
    with pytest.raises(DimensionMismatch):
        await ds.memory.embedder.embed(["direct"])
    await ds.memory.catch_up()
    assert await ds.memory.entries(MemoryFilter(embedding_status="embedded")) == []
    if ds.pool.on_sqlite:
        assert ds.memory.index.footprint()["vectors"] == 0


# --- the command line ---------------------------------------------------------------------


async def test_cli_memory_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", str(tmp_path / "memory.db")]
    assert (
        await devstream_cli(
            *db, "memory", "add", "WAL lets readers run beside a writer", "--type", "learning"
        )
        == 0
    )
    assert capsys.readouterr().out == "stored memory #1 (embedded)\n"
    assert (
        await devstream_cli(
            *db, "memory", "add", "WAL lets readers run beside a writer", "--type", "learning"
        )
        == 0
    )
    assert capsys.readouterr().out == "already stored as memory #1\n"

    assert await devstream_cli(*db, "--json", "memory", "search", "readers writer") == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["degraded"], [hit["id"] for hit in found["hits"]]) == (False, [1])

    assert await devstream_cli(*db, "memory", "show", "1") == 0
    assert "WAL lets readers run beside a writer" in capsys.readouterr().out
    assert await devstream_cli(*db, "--json", "context", "readers", "--budget", "50") == 0
    assert json.loads(capsys.readouterr().out)["memory_ids"] == [1]
    assert await devstream_cli(*db, "memory", "backfill") == 0
    assert "backfill: 0 embedded; 0 still waiting" in capsys.readouterr().out
    assert await devstream_cli(*db, "memory", "delete", "1") == 0
    assert await devstream_cli(*db, "memory", "show", "1") == 1
    assert capsys.readouterr().err == (
        "devstream: error: memory 1 not found (list existing ones to find the id)\n"
    )


@pytest.mark.socket
async def test_cli_says_degraded_when_ollama_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_ollama: FakeOllama
) -> None:
    db = ["--db", str(tmp_path / "down.db"), "--ollama-url", fake_ollama.url]
    fake_ollama.refuse()
    assert await devstream_cli(*db, "memory", "add", "stored while down", "--type", "context") == 0
    out = capsys.readouterr().out
    assert out.startswith("stored memory #1 (pending)\nwarning: stored as pending")
    assert await devstream_cli(*db, "memory", "search", "stored down") == 0
    assert capsys.readouterr().out.startswith("degraded: answered from full-text only")
    assert await devstream_cli(*db, "--json", "memory", "search", "stored down") == 0
    assert json.loads(capsys.readouterr().out)["degraded"] is True
    assert await devstream_cli(*db, "memory", "backfill") == 1
    assert "stopped:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "query", ['"', "NEAR(", "*", "OR OR", "x" * 10_000, "nul\x00byte", "lone\ud800surrogate"]
)
async def test_cli_hostile_queries_answer_or_fail_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], query: str
) -> None:
    db = ["--db", str(tmp_path / "hostile.db")]
    assert await devstream_cli(*db, "memory", "add", "OR NEAR star notes", "--type", "context") == 0
    capsys.readouterr()
    code = await devstream_cli(*db, "memory", "search", query)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if code == 0:
        assert captured.out
    else:
        assert captured.err.count("\n") == 1
    code = await devstream_cli(*db, "memory", "add", query, "--type", "context")
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert code == 0 or (code == 1 and captured.err.startswith("devstream: error: "))


# --- every failure mode of the embedding server, over real sockets ------------------------


@pytest.mark.socket
async def test_a_transient_failure_is_retried(
    integration_ollama_devstream: DevStream, fake_ollama: FakeOllama
) -> None:
    ds = integration_ollama_devstream
    fake_ollama.fail_next(1, status=503)
    result = await ds.memory.store("retried once", "context")
    assert result.embedded
    embedder = ds.memory.embedder
    assert isinstance(embedder, OllamaEmbedder)
    assert embedder.retries == 1
    assert fake_ollama.embed_requests == 2
    await embedder.aclose()


@pytest.mark.socket
async def test_content_already_stored_is_not_sent_to_the_model_server_again(
    integration_ollama_devstream: DevStream, fake_ollama: FakeOllama
) -> None:
    """A round trip to the server costs more than a look in the store, which comes first."""
    memory = integration_ollama_devstream.memory
    first = await memory.store("embedded once", "context")
    requests = fake_ollama.embed_requests
    again = await memory.store("embedded once", "context")
    assert (again.created, again.entry.id) == (False, first.entry.id)
    assert fake_ollama.embed_requests == requests == 1


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda f: f.fail(500), "500"),
        (lambda f: f.rate_limit(retry_after=0), "429"),
        (lambda f: f.garbage(), "JSON"),
        (lambda f: f.stall(1.0), "timed out"),
        (lambda f: f.refuse(), "connect"),
    ],
    ids=["5xx", "429", "garbage", "stall", "refused"],
)
@pytest.mark.socket
@pytest.mark.clock
async def test_failures_store_pending_and_the_breaker_stops_calling(
    integration_connection_pool: ConnectionPool,
    integration_config: Settings,
    integration_devstream: DevStream,
    fake_ollama: FakeOllama,
    breakage: Callable[[FakeOllama], None],
    expected: str,
) -> None:
    ds = ollama_devstream(
        integration_connection_pool, integration_config, fake_ollama.url, timeout_s=0.2
    )
    breakage(fake_ollama)
    first = await ds.memory.store("first while broken", "context")
    assert first.entry.embedding_status == "pending"
    assert first.warning is not None
    assert expected.lower() in first.warning.lower()
    await ds.memory.store("second while broken", "context")  # the breaker opens here

    embedder = ds.memory.embedder
    assert isinstance(embedder, OllamaEmbedder)
    state_when_broken = embedder.breaker.state
    assert state_when_broken == "open"
    requests = fake_ollama.embed_requests
    third = await ds.memory.store("third, refused by the breaker", "context")
    assert third.entry.embedding_status == "pending"
    assert fake_ollama.embed_requests == requests  # failed fast: no request was sent
    assert embedder.rejected == 1

    fake_ollama.recover()
    after_cooldown(ds)
    report = await ds.memory.backfill()
    assert (report.embedded, report.remaining) == (3, 0)
    assert embedder.breaker.state == "closed"
    await embedder.aclose()


@pytest.mark.subprocess
@pytest.mark.socket
async def test_fake_ollama_runs_as_a_module_and_doctor_sees_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "devstream.testing",
        "--port",
        "0",
        "--dimension",
        "8",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        try:
            line = await asyncio.wait_for(server.stdout.readline(), timeout=PROCESS_WAIT_S)
        except asyncio.TimeoutError:  # not TimeoutError on Python 3.10
            pytest.fail(f"the fake Ollama printed no URL within {PROCESS_WAIT_S:g} s")
        url = line.decode().strip()
        assert url.startswith("http://127.0.0.1:")
        db = ["--db", str(tmp_path / "doctor.db"), "--ollama-url", url]
        assert await devstream_cli(*db, "init") == 0
        assert await devstream_cli(*db, "doctor") == 0
        assert "(Ollama 0.0.0-fake)" in capsys.readouterr().out
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), timeout=PROCESS_WAIT_S)
    assert server.returncode is not None


async def test_in_process_full_text_ranks_exactly_as_fts5(integration_devstream: DevStream) -> None:
    memory = integration_devstream.memory
    texts = [
        "Running the writers: a writer runs while readers read",
        "Café résumé naïve — diacritics are folded away",
        "Relational generalization of relations; related work",
        "Version 2026 shipped on 2026-11-25 with build 42",
        "MixedCase Tokens and UPPER case and lower case",
        "ponies caresses quorum leases leader",
        "short a an to of x y z",
        "writer writer writer writer writer, the writer again",
    ]
    await memory.store_many([NewMemory(text, "context") for text in texts])
    queries = [
        "writers running",
        "cafe resume",
        "CAFÉ",
        "relate generalize",
        "2026 42",
        "case",
        "leader leases quorum",
        "a x",
        "writer",
        "naïve diacritic",
        "unknownword",
    ]
    for query in queries:
        fast = (await memory.search(query, limit=50, weights=TEXT_ONLY)).hits
        exact = (await memory.search(query, limit=50, weights=TEXT_ONLY, exact=True)).hits
        assert [h.entry.id for h in fast] == [h.entry.id for h in exact], query
        assert [h.text_score for h in fast] == pytest.approx(
            [h.text_score for h in exact], rel=1e-4
        ), query


async def test_many_candidates_metrics_and_bad_arguments(integration_devstream: DevStream) -> None:
    memory = integration_devstream.memory
    results = await memory.store_many(
        [NewMemory(f"lease renewal note {n} for the leader", "context") for n in range(60)]
    )
    hits = (await memory.search("lease renewal leader", limit=5)).hits
    assert len(hits) == 5
    assert all(h.text_score is not None and h.similarity is not None for h in hits)
    if integration_devstream.pool.on_sqlite:
        gauges = integration_devstream.stats()["gauges"]["memory_index"]  # type: ignore[index]
        assert (gauges["entries"], gauges["vectors"]) == (60, 60)
        assert gauges["vector_bytes"] >= 60 * 768 * 4
        assert gauges["text_bytes"] > 0

    with pytest.raises(
        InvalidInput, match=r"limit must be a whole number from 1 to 2\^63-1, got 0"
    ):
        await memory.search("lease", limit=0)
    with pytest.raises(
        InvalidInput, match=r"batch size must be a whole number from 1 to 2\^63-1, got 0"
    ):
        await memory.backfill(batch_size=0)
    missing = results[-1].entry.id + 1
    with pytest.raises(NotFound):
        await memory.update(missing, content="nothing there")
    with pytest.raises(NotFound):
        await memory.delete(missing)
    mismatched = DevStream(
        integration_devstream.settings,
        integration_devstream.pool,
        memory_index=MemoryIndex("another-model", 768),
    )
    with pytest.raises(ValueError, match="model and dimension"):
        _ = mismatched.memory  # built on first use


@pytest.mark.socket
async def test_a_client_error_is_not_retried_and_leaves_the_breaker_closed(
    integration_ollama_devstream: DevStream, fake_ollama: FakeOllama
) -> None:
    ds = integration_ollama_devstream
    embedded = (await ds.memory.store("embedded before the change", "context")).entry
    assert embedded.embedding_status == "embedded"

    fake_ollama.fail(400)
    for n in range(3):
        result = await ds.memory.store(f"refused {n}", "context")
        assert result.warning is not None
        assert "400" in result.warning
    embedder = ds.memory.embedder
    assert isinstance(embedder, OllamaEmbedder)
    assert (embedder.retries, embedder.breaker.state) == (0, "closed")

    # New content that cannot be embedded drops the old vector: it no longer describes it.
    await ds.memory.search("embedded change")  # builds the index
    changed = await ds.memory.update(embedded.id, content="rewritten while refused")
    assert changed.embedding_status == "pending"
    assert changed.embedding is None
    await ds.memory.catch_up()
    if ds.pool.on_sqlite:
        rows = ds.memory.index.rows
        assert not rows.has_vector[rows.live[embedded.id]]
    assert (await ds.memory.search("rewritten while refused", weights=VECTOR_ONLY)).hits == []
    await embedder.aclose()


async def test_context_for_a_task_prefers_its_plan(
    integration_devstream: DevStream,
    integration_sample_plan: Plan,
    integration_sample_task: MicroTask,
) -> None:
    ds = integration_devstream
    other_plan = await ds.queries.plans.create(title="Another plan")
    memory = ds.memory
    ours = await memory.store(
        "memory table columns and checks", "decision", plan_id=integration_sample_plan.id
    )
    theirs = await memory.store(
        "memory table columns, checks and the full-text index",
        "decision",
        plan_id=other_plan.id,
    )
    context = await ds.workflow.context_for(integration_sample_task.id, 1_000)
    assert context.memory_ids[:2] == [ours.entry.id, theirs.entry.id]
    with pytest.raises(NotFound):
        await ds.workflow.context_for(424242, 1_000)


# --- a memory the server cannot embed ----------------------------------------------------------


HALVING_BOUND_S = 20.0


async def _pending(ds: DevStream, fake: FakeOllama, texts: list[str]) -> list[int]:
    """Store `texts` while the server is down: every one waits to be embedded."""
    fake.refuse()
    stored = await ds.memory.store_many([NewMemory(text, "context") for text in texts])
    assert all(result.entry.embedding_status == "pending" for result in stored)
    fake.recover()
    after_cooldown(ds)
    return [result.entry.id for result in stored]


@pytest.mark.parametrize(
    ("status", "reason"),
    [(400, CONTEXT_LENGTH_ERROR), (500, "llama runner process has terminated")],
    ids=["too-long", "server-error-for-it-alone"],
)
@pytest.mark.socket
async def test_one_memory_the_server_refuses_never_blocks_the_others(
    integration_ollama_devstream: DevStream, fake_ollama: FakeOllama, status: int, reason: str
) -> None:
    ds = integration_ollama_devstream
    texts = [f"note {n} about the writer" for n in range(100)]
    texts[37] = "POISON " + texts[37]
    ids = await _pending(ds, fake_ollama, texts)
    fake_ollama.poison("POISON", status=status, message=reason)

    progress: list[tuple[int, int]] = []
    # The default batch size: 64. Halving that never shrinks a part would go on forever:
    # the bound, far beyond the second this takes, turns that into a failure.
    report = await asyncio.wait_for(
        ds.memory.backfill(progress=lambda done, total: progress.append((done, total))),
        timeout=HALVING_BOUND_S,
    )

    assert (report.embedded, report.remaining, report.error) == (99, 1, None)
    assert progress == [(64, 100), (100, 100)]  # the set-aside memory counts as done
    assert list(report.set_aside) == [ids[37]]
    assert reason in report.set_aside[ids[37]]
    # A first probe that the server embeds at all; 2 batches; the refused one halved 6 times
    # down to the poisoned memory (each half beside it embedded), each refusal followed by
    # a probe.
    assert report.requests == 1 + 2 + 2 * 6 + 7
    poisoned = await ds.memory.get(ids[37])
    assert (poisoned.embedding_status, poisoned.embedding_attempts) == ("pending", 1)
    assert reason in (poisoned.embedding_error or "")
    embedded = await ds.memory.entries(MemoryFilter(embedding_status="embedded"), limit=None)
    assert len(embedded) == 99


@pytest.mark.socket
async def test_a_refused_batch_splits_its_larger_half_first(
    integration_ollama_devstream: DevStream, fake_ollama: FakeOllama
) -> None:
    """Three memories, the last refused: [a, b] and [P], then P alone is refused."""
    ds = integration_ollama_devstream
    ids = await _pending(ds, fake_ollama, ["note a", "note b", "POISON note"])
    fake_ollama.poison("POISON")
    report = await asyncio.wait_for(ds.memory.backfill(batch_size=3), timeout=HALVING_BOUND_S)
    assert (report.embedded, list(report.set_aside)) == (2, [ids[2]])
    # The probe, [a, b, P] refused, the probe, [a, b], [P] refused, the probe.
    assert report.requests == 6


async def test_a_batch_size_below_one_is_refused(integration_devstream: DevStream) -> None:
    for embed_later in (
        integration_devstream.memory.backfill,
        integration_devstream.memory.reembed,
    ):
        with pytest.raises(InvalidInput, match="batch size"):
            await embed_later(batch_size=0)


@pytest.mark.socket
async def test_a_memory_refused_three_times_is_failed_until_retried(
    integration_ollama_devstream: DevStream, fake_ollama: FakeOllama
) -> None:
    ds = integration_ollama_devstream
    ids = await _pending(ds, fake_ollama, ["a fine note", "POISON, far too long"])
    fake_ollama.poison("POISON")
    for attempt in (1, 2, 3):
        report = await ds.memory.backfill(batch_size=1)
        assert list(report.set_aside) == [ids[1]], attempt
    failed = await ds.memory.get(ids[1])
    assert (failed.embedding_status, failed.embedding_attempts) == ("failed", 3)
    assert CONTEXT_LENGTH_ERROR in (failed.embedding_error or "")
    assert await ds.memory.waiting() == 0

    quiet = await ds.memory.backfill()
    assert (quiet.embedded, quiet.requests, quiet.set_aside) == (0, 0, {})

    fake_ollama.recover()  # say, a model with a longer context
    retried = await ds.memory.backfill(retry_failed=True)
    assert (retried.embedded, retried.remaining, retried.set_aside) == (1, 0, {})
    embedded = await ds.memory.get(ids[1])
    assert (embedded.embedding_status, embedded.embedding_attempts) == ("embedded", 0)
    assert embedded.embedding_error is None


@pytest.mark.socket
async def test_a_server_failing_every_input_stops_the_backfill_and_blames_no_memory(
    integration_ollama_devstream: DevStream, fake_ollama: FakeOllama
) -> None:
    ds = integration_ollama_devstream
    ids = await _pending(ds, fake_ollama, [f"note {n}" for n in range(10)])
    fake_ollama.fail(500)
    report = await ds.memory.backfill()
    assert (report.embedded, report.remaining, report.set_aside) == (0, 10, {})
    assert "HTTP 500" in (report.error or "")
    assert report.requests == 1  # the first probe shows the server failing
    untouched = await ds.memory.get(ids[0])
    assert (untouched.embedding_attempts, untouched.embedding_error) == (0, None)


@pytest.mark.socket
@pytest.mark.clock
async def test_one_action_waits_no_longer_than_its_deadline_and_says_it_timed_out(
    integration_connection_pool: ConnectionPool,
    integration_config: Settings,
    integration_devstream: DevStream,
    fake_ollama: FakeOllama,
) -> None:
    """A server that answers far slower than the deadline: 3 attempts of a 30 s request
    timeout would take 90 s; the 0.5 s deadline ends the whole call, retries included."""
    ds = ollama_devstream(
        integration_connection_pool,
        integration_config,
        fake_ollama.url,
        timeout_s=30.0,
        attempts=3,
        deadline_s=0.5,
    )
    fake_ollama.stall(60.0)
    started = asyncio.get_running_loop().time()
    result = await ds.memory.store("a note while the server is slow", "context")
    waited = asyncio.get_running_loop().time() - started
    fake_ollama.recover()
    assert result.entry.embedding_status == "pending"
    assert result.warning is not None
    assert "timed out: no answer within the 0.5 s deadline" in result.warning
    assert waited < 30.0, "the call waited for the request timeout, not its deadline"
    await ds.memory.embedder.aclose()
