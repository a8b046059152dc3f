"""Integration fixtures: one migrated database per xdist worker, isolated per test.

Session scope (per worker): the running loop, the worker's database file, the settings a
user gets by default, the connection pool, and the migrated schema (kept as a template).
Test scope: the seam - `integration_query_manager` and the facade built on the same pool run
inside one outer transaction that is rolled back - and, for what the seam cannot host, a
real database: a fresh copy of the template with a real pool. After every test the
pollution guard checks that the worker's database is exactly as pristine as before.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from pytest_httpx import HTTPXMock
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream import DevStream, Settings
from devstream.db import generation, migrate
from devstream.db.pool import ConnectionPool
from devstream.db.queries import QueryManager
from devstream.db.records import MemoryEntry, MicroTask, Phase, Plan
from devstream.memory.breaker import CircuitBreaker
from devstream.memory.hashing import HashingEmbedder
from devstream.memory.index import MemoryIndex
from devstream.memory.ollama import OllamaEmbedder
from devstream.memory.service import NewMemory
from devstream.testing import FakeOllama, deterministic_embedding
from devstream.vocabulary import EMBED_DIMENSION
from tests import postgres
from tests.conftest import requested_backend
from tests.support import ManualClock

_INTEGRATION = Path(__file__).parent
_BENCH = _INTEGRATION / "benchmarks"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration tests share one session loop; a sync test would make pytest-asyncio
    tear down and rebuild every session-scoped async fixture, so refuse it up front.
    Benchmarks are the exception: they drive loops of their own (see benchmarks/)."""
    for item in items:
        here = item.path.is_relative_to(_INTEGRATION) and not item.path.is_relative_to(_BENCH)
        if here and not inspect.iscoroutinefunction(_test_body(item)):
            raise pytest.UsageError(f"{item.nodeid}: integration tests must be `async def`")


def _test_body(item: pytest.Item) -> object:
    """The function a test runs: for a Hypothesis test, the one `@given` wraps."""
    function = getattr(item, "function", None)
    hypothesis = getattr(function, "hypothesis", None)
    return function if hypothesis is None else hypothesis.inner_test


@dataclass(frozen=True)
class MigratedSchema:
    """The worker's database at head: a template copy and its pristine row counts. The
    template is a file on SQLite, a database's name on PostgreSQL."""

    template: Path | str
    head: str
    baseline: dict[str, int]
    generation: str


def template_file(schema: MigratedSchema) -> Path:
    """The template as a file, for a test that copies it (SQLite only)."""
    assert isinstance(schema.template, Path), "on PostgreSQL the template is a database"
    return schema.template


_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table' "
    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    "postgresql": "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
    "ORDER BY tablename",
}


async def table_names(conn: AsyncConnection) -> list[str]:
    """Every table, FTS shadow tables included (not SQLite's own, such as sqlite_sequence)."""
    return list(await conn.scalars(text(_TABLES[conn.dialect.name])))


async def table_row_counts(pool: ConnectionPool) -> dict[str, int]:
    """Rows in every table."""
    async with pool.read_transaction() as conn:
        return {
            name: int(await conn.scalar(text(f'SELECT count(*) FROM "{name}"')) or 0)
            for name in await table_names(conn)
        }


async def store_generation(pool: ConnectionPool) -> str:
    async with pool.read_transaction() as conn:
        return await generation.current(conn)


@pytest_asyncio.fixture(scope="session")
async def integration_event_loop() -> asyncio.AbstractEventLoop:
    """The loop every test and fixture of this worker runs on (the kind `--loop` chose)."""
    return asyncio.get_running_loop()


@pytest.fixture(scope="session")
def integration_db_path(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A database file of this xdist worker's own ("master" without xdist)."""
    return tmp_path_factory.mktemp("integration") / f"devstream-{worker_id}.db"


@pytest.fixture(scope="session")
def integration_backend(request: pytest.FixtureRequest) -> str:
    """sqlite or postgresql (`--backend`)."""
    return requested_backend(request.config)


@pytest.fixture(scope="session")
def integration_pg_server(integration_backend: str) -> str | None:
    """The PostgreSQL server's URL (None on SQLite): see tests/postgres.py."""
    if integration_backend != "postgresql":
        return None
    return postgres.server_url()


@pytest_asyncio.fixture(scope="session")
async def integration_config(
    integration_db_path: Path,
    integration_pg_server: str | None,
    integration_event_loop: asyncio.AbstractEventLoop,
) -> AsyncIterator[Settings]:
    """The settings a user's default has (WAL, foreign keys, timeouts), on the worker's file;
    on PostgreSQL, on a database of the worker's own, a copy of the migrated template."""
    server = integration_pg_server
    if server is None:
        yield Settings(db=str(integration_db_path))
        return
    name = postgres.unique_name(f"devstream_{integration_db_path.stem.replace('-', '_')}")
    url = await postgres.copy_of(server, await postgres.template(server), name)
    yield Settings(db=url)
    await postgres.drop(server, name)


@pytest_asyncio.fixture(scope="session")
async def integration_connection_pool(
    integration_config: Settings, integration_event_loop: asyncio.AbstractEventLoop
) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool.create(integration_config)
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="session")
async def integration_database_schema(
    integration_connection_pool: ConnectionPool,
    integration_db_path: Path,
    integration_pg_server: str | None,
) -> MigratedSchema:
    """`alembic upgrade head` once per worker, then a template copy for real-database tests."""
    pool = integration_connection_pool
    await migrate.upgrade(pool)
    template: Path | str
    if integration_pg_server is not None:
        template = await postgres.template(integration_pg_server)
    else:
        template = integration_db_path.with_name(f"template-{integration_db_path.name}")
        with closing(sqlite3.connect(integration_db_path)) as source:
            source.execute("VACUUM INTO ?", (str(template),))
    state = await migrate.status(pool)
    return MigratedSchema(
        template=template,
        head=state.head,
        baseline=await table_row_counts(pool),
        generation=await store_generation(pool),
    )


@pytest_asyncio.fixture(autouse=True)
async def integration_pollution_guard(
    integration_connection_pool: ConnectionPool, integration_database_schema: MigratedSchema
) -> AsyncIterator[None]:
    """After each test the worker's database must be exactly as pristine as before it."""
    yield
    pool, pristine = integration_connection_pool, integration_database_schema
    counts = await table_row_counts(pool)
    changed = [
        f"{table}: {pristine.baseline.get(table, 0)} -> {rows} rows"
        for table, rows in counts.items()
        if rows != pristine.baseline.get(table, 0)
    ]
    if changed:
        pytest.fail("test left rows behind in the shared database: " + "; ".join(changed))
    if await store_generation(pool) != pristine.generation:
        pytest.fail("a write committed to the shared database outside the isolation seam")


@pytest_asyncio.fixture
async def integration_devstream(
    integration_connection_pool: ConnectionPool,
    integration_config: Settings,
    integration_database_schema: MigratedSchema,
    integration_memory_index: MemoryIndex,
) -> AsyncIterator[DevStream]:
    """The facade on the worker's pool, inside the isolation seam: everything rolls back.
    Its memory shares the worker's memory index with every other test."""
    pool = integration_connection_pool
    async with pool.isolated():
        yield DevStream(integration_config, pool, memory_index=integration_memory_index)


@pytest.fixture
def integration_query_manager(integration_devstream: DevStream) -> QueryManager:
    return integration_devstream.queries


@pytest_asyncio.fixture
async def integration_real_database(
    integration_database_schema: MigratedSchema,
    integration_pg_server: str | None,
    tmp_path: Path,
) -> AsyncIterator[DevStream]:
    """A fresh copy of the migrated template with a real pool; deleted afterwards."""
    template, server = integration_database_schema.template, integration_pg_server
    if server is not None:
        assert isinstance(template, str), "on PostgreSQL the template is a database"
        name = postgres.unique_name("devstream_real")
        url = await postgres.copy_of(server, template, name)
        try:
            async with DevStream.open(Settings(db=url), migrate_schema=False) as ds:
                yield ds
        finally:
            await postgres.drop(server, name)
        return
    assert isinstance(template, Path)
    path = tmp_path / "real.db"
    shutil.copyfile(template, path)
    async with DevStream.open(Settings(db=str(path)), migrate_schema=False) as ds:
        yield ds
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


@pytest_asyncio.fixture
async def integration_sample_plan(integration_query_manager: QueryManager) -> Plan:
    return await integration_query_manager.plans.create(
        title="Add semantic memory",
        description="Store and search what the work produces",
        priority=7,
    )


@pytest_asyncio.fixture
async def integration_sample_phase(
    integration_query_manager: QueryManager, integration_sample_plan: Plan
) -> Phase:
    return await integration_query_manager.phases.create(
        plan_id=integration_sample_plan.id, name="Storage", position=0
    )


@pytest_asyncio.fixture
async def integration_sample_task(
    integration_query_manager: QueryManager, integration_sample_phase: Phase
) -> MicroTask:
    return await integration_query_manager.tasks.create(
        phase_id=integration_sample_phase.id,
        title="Create the memory table",
        description="Columns, checks and the full-text index",
        estimated_minutes=8,
        priority=6,
    )


# --- memory -------------------------------------------------------------------------------

OLLAMA_URL = "http://localhost:11434"
OLLAMA_DIMENSION = EMBED_DIMENSION  # the default model's


@pytest.fixture(scope="session")
def integration_memory_index() -> MemoryIndex:
    """One index for the whole worker, as in a long-lived process: the seam's rollbacks
    must never leave it serving entries the store no longer has."""
    embedder = HashingEmbedder()
    return MemoryIndex(embedder.model, embedder.dimension)


@pytest_asyncio.fixture
async def integration_memory_entries(
    integration_devstream: DevStream,
    integration_sample_plan: Plan,
    integration_sample_task: MicroTask,
) -> list[MemoryEntry]:
    """A small, varied memory: linked and unlinked entries of several content types."""
    samples = [
        NewMemory(
            "Use WAL journal mode so readers never block the writer",
            "decision",
            plan_id=integration_sample_plan.id,
        ),
        NewMemory(
            "def connect(path): return sqlite3.connect(path, timeout=5)",
            "code",
            plan_id=integration_sample_plan.id,
            task_id=integration_sample_task.id,
        ),
        NewMemory(
            "The FTS5 index is kept in step by triggers on insert, update and delete",
            "documentation",
        ),
        NewMemory("Embedding server timed out twice during the nightly backfill", "error"),
        NewMemory(
            "Batching embeddings by 64 halves the backfill time",
            "learning",
            plan_id=integration_sample_plan.id,
        ),
        NewMemory("Readers use a small pool; one writer at a time per process", "context"),
    ]
    results = await integration_devstream.memory.store_many(samples)
    return [result.entry for result in results]


def after_cooldown(ds: DevStream) -> None:
    """Let the breaker of an `ollama_devstream` cool down."""
    embedder = ds.memory.embedder
    assert isinstance(embedder, OllamaEmbedder)
    clock = embedder.breaker.clock
    assert isinstance(clock, ManualClock)
    clock.advance(embedder.breaker.cooldown_s)


def ollama_devstream(
    pool: ConnectionPool, settings: Settings, url: str, **options: float
) -> DevStream:
    """The facade on the worker's pool with an Ollama embedder; fast retries for tests."""
    embedder = OllamaEmbedder(
        url,
        dimension=OLLAMA_DIMENSION,
        attempts=int(options.get("attempts", 2)),
        backoff_initial_s=0.001,
        backoff_max_s=0.005,
        timeout_s=options.get("timeout_s", 2.0),
        deadline_s=options.get("deadline_s", 30.0),
        breaker=CircuitBreaker(failure_threshold=2, cooldown_s=30.0, clock=ManualClock()),
    )
    return DevStream(settings, pool, embedder)


@pytest_asyncio.fixture
async def integration_ollama_devstream(
    integration_devstream: DevStream, fake_ollama: FakeOllama
) -> AsyncIterator[DevStream]:
    """The facade inside the seam, embedding through the fake Ollama server."""
    base = integration_devstream
    ds = ollama_devstream(base.pool, base.settings, fake_ollama.url)
    yield ds
    await ds.memory.embedder.aclose()


def _ollama_embed(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
    vectors = [deterministic_embedding(text, OLLAMA_DIMENSION) for text in texts]
    return httpx.Response(200, json={"model": body["model"], "embeddings": vectors})


@pytest.fixture
def integration_mock_ollama_responses(httpx_mock: HTTPXMock) -> str:
    """Ollama's embed API mocked in-process: one deterministic 768-d vector per input."""
    httpx_mock.add_callback(
        _ollama_embed,
        method="POST",
        url=f"{OLLAMA_URL}/api/embed",
        is_reusable=True,
        is_optional=True,
    )
    return OLLAMA_URL


@pytest.fixture
def integration_mock_ollama_healthy(
    httpx_mock: HTTPXMock, integration_mock_ollama_responses: str
) -> str:
    """A healthy Ollama: embeddings as above, and its version endpoint answering."""
    httpx_mock.add_response(
        method="GET",
        url=f"{OLLAMA_URL}/api/version",
        json={"version": "0.9.0"},
        is_reusable=True,
        is_optional=True,
    )
    return integration_mock_ollama_responses
