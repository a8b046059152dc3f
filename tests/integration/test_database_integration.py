"""Database integration: the pool, transactions, migrations, constraints, metrics, isolation."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path, PurePosixPath
from typing import Any, cast

import psutil
import pytest
from alembic import command
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    bindparam,
    column,
    insert,
    select,
    table,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream import DevStream, Settings
from devstream.db import migrate, schema
from devstream.db.memory_store import content_hash
from devstream.db.pool import ConnectionPool
from devstream.db.queries import QueryManager
from devstream.db.records import MicroTask, Phase, Plan
from devstream.db.sqlite import DriverQuery, OneTripConnection
from devstream.errors import (
    ConfigError,
    ConstraintViolation,
    InvalidInput,
    NotFound,
    NotInitialised,
    PoolTimeout,
    SchemaTooNew,
    StorageError,
    StoreClosed,
)
from devstream.testing import FakeOllama
from tests import postgres
from tests.conftest import requested_loop
from tests.integration.conftest import MigratedSchema, store_generation, table_row_counts
from tests.leaks import SYSTEM_TMP
from tests.support import (
    CHECK_FAILED,
    FOREIGN_KEY_FAILED,
    PROCESS_WAIT_S,
    REPO_ROOT,
    devstream_cli,
    repo_pythonpath,
)

# --- connection pool under load ---------------------------------------------------------


@pytest.mark.clock
async def test_pool_serves_hundreds_of_concurrent_mixed_operations(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    plans, stats = ds.queries.plans, ds.pool.stats
    seeded = [await plans.create(title=f"seed-{n}") for n in range(10)]
    reads_before, writes_before = stats.reads, stats.writes

    async def operation(n: int) -> object:
        if n % 3 == 0:
            return await plans.create(title=f"load-{n}", priority=1 + n % 10)
        if n % 3 == 1:
            return await plans.get(seeded[n % len(seeded)].id)
        return await plans.list(limit=5)

    results = await asyncio.gather(*(operation(n) for n in range(300)))

    assert len(results) == 300
    assert await plans.count() == 10 + 100
    assert stats.writes - writes_before == 100
    assert stats.reads - reads_before == 200 + 1  # the count above is a read too
    assert stats.in_use == 0
    assert stats.peak_in_use == stats.size == ds.settings.pool_size
    assert stats.waits > 0
    assert stats.wait_time_s > 0
    assert (stats.writer_waits > 0) == ds.pool.on_sqlite  # one writer per process there
    assert stats.timeouts == 0
    assert ds.stats()["gauges"]["pool"] == stats.as_dict()  # type: ignore[index]


@pytest.mark.clock
async def test_pool_timeout_is_a_typed_error(integration_real_database: DevStream) -> None:
    db = integration_real_database.settings.db  # a file or a server's database
    pool = ConnectionPool.create(Settings(db=db, pool_size=1, pool_timeout_s=0.05))
    try:
        assert pool.stats.as_dict() == {  # a fresh pool has counted nothing
            "size": 1.0,
            **dict.fromkeys(["in_use", "peak_in_use", "waits", "wait_time_s"], 0.0),
            **dict.fromkeys(["writer_waits", "reads", "writes", "timeouts"], 0.0),
        }
        assert not pool.concurrent_reads  # one connection: a second read would wait for it
        async with pool.read_transaction():
            assert pool.open_connections() == 1  # in use, none idle
            for _ in range(2):
                with pytest.raises(PoolTimeout, match=r"no database connection free after 0\.05s"):
                    async with pool.read_transaction():
                        pass
        assert (pool.stats.timeouts, pool.stats.waits, pool.stats.in_use) == (2, 2, 0)
        # Those that gave up wait no more: a later read finds the connection free.
        async with pool.read_transaction():
            pass
        assert (pool.stats.reads, pool.stats.waits, pool.stats.peak_in_use) == (4, 2, 1)
        # The two timed-out waits of 0.05 s, and little else.
        assert 0.1 <= pool.stats.wait_time_s < 2.0
    finally:
        await pool.close()


async def test_a_lone_statement_is_sent_without_begin_or_commit(
    integration_real_database: DevStream,
) -> None:
    """`read_statement` opens no transaction block: on PostgreSQL each statement is then a
    transaction of its own, so `now()` (a transaction's start) moves between two of them;
    on SQLite the driver reports no transaction open."""
    pool = integration_real_database.pool
    if pool.on_sqlite:
        async with pool.read_statement() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert isinstance(driver, OneTripConnection)
            assert await conn.scalar(text("SELECT 1")) == 1
            assert not driver.in_transaction
        return
    async with pool.read_statement() as conn:
        first, second = await _now_twice(conn)
        assert second > first
    async with pool.read_transaction() as conn:  # the contrast: one transaction, one now()
        first, second = await _now_twice(conn)
        assert second == first


async def _now_twice(conn: AsyncConnection) -> tuple[Any, Any]:
    """PostgreSQL's `now()` (its transaction's start) from two statements 10 ms apart."""
    first = await conn.scalar(text("SELECT now()"))
    await conn.execute(text("SELECT pg_sleep(0.01)"))
    return first, await conn.scalar(text("SELECT now()"))


async def test_every_caller_queued_for_a_connection_is_counted_once(
    integration_real_database: DevStream,
) -> None:
    pool = ConnectionPool.create(Settings(db=integration_real_database.settings.db, pool_size=2))
    try:
        assert pool.concurrent_reads
        async with pool.read_statement() as conn:  # one statement, no transaction: a read
            assert await conn.scalar(text("SELECT 1")) == 1
        assert (pool.stats.reads, pool.stats.waits) == (1, 0)

        async def read() -> None:
            async with pool.read_transaction():
                pass

        async with pool.read_transaction():
            async with pool.read_transaction():
                queued = [asyncio.create_task(read()) for _ in range(2)]
                await asyncio.sleep(0)  # both reach the pool and queue
                assert pool.stats.waits == 2
            assert pool.open_connections() == 2  # in use and idle alike
            await asyncio.gather(*queued)
        assert (pool.stats.reads, pool.stats.waits, pool.stats.in_use) == (5, 2, 0)
    finally:
        await pool.close()


async def test_lone_reads_share_one_kept_connection_that_never_keeps_a_caller_waiting(
    integration_real_database: DevStream,
) -> None:
    """A lone read gets the connection the pool keeps for them; a second one at the same
    time gets its own. The kept one goes back to the pool when a caller would otherwise
    wait for it (even on a pool of one connection), and a read that fails gives it back."""
    db = integration_real_database.settings.db
    pool = ConnectionPool.create(Settings(db=db, pool_size=2, pool_timeout_s=5))
    try:
        # The kept connection is lent to the first: the second checks one out.
        async with pool.read_statement() as first, pool.read_statement() as beside:
            assert beside is not first
            assert pool.stats.in_use == 2
        async with pool.read_statement() as again:
            assert again is first
        assert (pool.stats.in_use, pool.stats.waits, pool.open_connections()) == (0, 0, 2)

        # Both connections busy: a third caller waits until the lone read is done, and then
        # gets the kept connection's slot.
        entered = asyncio.Event()

        async def read() -> None:
            async with pool.read_transaction():
                entered.set()

        async with pool.read_transaction():
            async with pool.read_statement() as held:
                assert held is first
                waiting = asyncio.create_task(read())
                await asyncio.sleep(0.05)
                assert not entered.is_set()
            await asyncio.wait_for(entered.wait(), timeout=5)
        await waiting
        assert pool.stats.timeouts == 0

        with pytest.raises(StorageError):
            async with pool.read_statement() as failing:
                await failing.execute(text("SELECT * FROM no_such_table"))
        async with pool.read_statement() as after:
            assert after is not failing
            assert await after.scalar(text("SELECT 1")) == 1
    finally:
        await pool.close()
    assert pool.open_connections() == 0


async def test_a_pool_closed_during_a_lone_read_keeps_nothing_open(
    integration_real_database: DevStream,
) -> None:
    pool = ConnectionPool.create(Settings(db=integration_real_database.settings.db))
    async with pool.read_statement() as kept:
        pass
    async with pool.read_statement() as lent:
        assert lent is kept
        await pool.close()
    assert lent.closed
    assert pool.open_connections() == 0


async def test_a_pool_of_one_connection_gives_the_kept_one_to_a_transaction(
    integration_real_database: DevStream,
) -> None:
    db = integration_real_database.settings.db
    pool = ConnectionPool.create(Settings(db=db, pool_size=1, pool_timeout_s=5))
    try:
        for _ in range(2):
            async with pool.read_statement() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
            async with pool.read_transaction() as conn:
                assert await conn.scalar(text("SELECT 2")) == 2
        assert (pool.stats.timeouts, pool.stats.waits, pool.open_connections()) == (0, 0, 1)
    finally:
        await pool.close()
    assert pool.open_connections() == 0


@pytest.mark.sqlite_only("one writer at a time per process")
async def test_a_writer_waits_for_the_one_before_it_and_is_counted(
    integration_real_database: DevStream,
) -> None:
    pool = integration_real_database.pool
    assert pool.concurrent_reads  # five connections, no seam
    waiting_before = pool.stats.writer_waits

    async def write() -> None:
        async with pool.write_transaction():
            pass

    async with pool.write_transaction():
        second = asyncio.create_task(write())
        await asyncio.sleep(0)  # the second writer reaches the lock and queues
        assert pool.stats.writer_waits == waiting_before + 1
    await second
    await write()  # alone: no wait
    assert pool.stats.writer_waits == waiting_before + 1


def other_writer_can_begin(path: Path) -> bool:
    """Whether another connection (another process, as far as SQLite knows) can take the
    write lock now, without waiting."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "database is locked" not in str(exc):
            raise
        return False
    else:
        other.rollback()
        return True
    finally:
        other.close()


@pytest.mark.sqlite_only("BEGIN IMMEDIATE takes the file's write lock")
async def test_a_write_transaction_takes_the_write_lock_as_it_begins(
    integration_real_database: DevStream,
) -> None:
    """BEGIN IMMEDIATE, before any write: a writer waits on busy_timeout at its start instead
    of failing when it upgrades a read lock halfway. The isolation seam's transaction too."""
    pool, path = integration_real_database.pool, integration_real_database.settings.sqlite_path
    assert path is not None
    async with pool.read_transaction() as conn:
        await conn.scalar(text("SELECT count(*) FROM intervention_plans"))
        assert other_writer_can_begin(path)
    async with pool.write_transaction(bump_generation=False):
        assert not other_writer_can_begin(path)
    async with pool.isolated():
        assert not other_writer_can_begin(path)
    assert other_writer_can_begin(path)


async def test_a_database_in_folders_not_made_yet_gets_them(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folders" / "devstream.db"
    pool = ConnectionPool.create(Settings(db=str(path)))
    await pool.close()
    assert path.parent.is_dir()


# --- transaction rollback and consistency -----------------------------------------------


async def test_exception_mid_transaction_leaves_nothing(
    integration_query_manager: QueryManager,
) -> None:
    pool = integration_query_manager.pool
    async with pool.read_transaction() as conn:
        token_before = await conn.scalar(select(schema.store_state.c.generation))

    with pytest.raises(RuntimeError, match="boom"):
        async with pool.write_transaction() as conn:
            await conn.execute(insert(schema.intervention_plans).values(title="half-written"))
            raise RuntimeError("boom")

    assert await integration_query_manager.plans.count() == 0
    async with pool.read_transaction() as conn:
        assert await conn.scalar(select(schema.store_state.c.generation)) == token_before


async def test_constraint_failure_rolls_back_the_whole_transaction(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    token_before = await store_generation(ds.pool)

    with pytest.raises(ConstraintViolation, match=CHECK_FAILED):
        async with ds.pool.write_transaction() as conn:
            plan_id = await conn.scalar(
                insert(schema.intervention_plans)
                .values(title="kept only if all succeeds")
                .returning(schema.intervention_plans.c.id)
            )
            await conn.execute(insert(schema.phases).values(plan_id=plan_id, name="p", position=0))
            await conn.execute(insert(schema.phases).values(plan_id=plan_id, name="", position=1))

    assert await ds.queries.plans.count() == 0
    assert await ds.queries.phases.count() == 0
    assert await store_generation(ds.pool) == token_before


@pytest.mark.sqlite_only("the store-generation token (PostgreSQL has none)")
async def test_every_committed_write_replaces_the_generation_token(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    tokens = {await store_generation(ds.pool)}
    plan = await ds.queries.plans.create(title="t")
    tokens.add(await store_generation(ds.pool))
    await ds.queries.plans.update(plan.id, title="t2")
    tokens.add(await store_generation(ds.pool))
    await ds.queries.plans.get(plan.id)
    tokens.add(await store_generation(ds.pool))
    assert len(tokens) == 3  # two writes, two new tokens; the read changed nothing


@pytest.mark.sqlite_only("the driver's thread and the store-generation token")
async def test_a_write_transaction_begins_and_replaces_the_token_in_one_round_trip(
    integration_real_database: DevStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every call to the driver's thread wakes it and waits for it: BEGIN IMMEDIATE and the
    transaction's new token go together, then each statement and the commit."""
    pool = integration_real_database.pool
    trips: list[object] = []
    to_thread: Any = OneTripConnection._execute  # aiosqlite's queue to its thread

    async def counted(self: OneTripConnection, function: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(function)
        return await to_thread(self, function, *args, **kwargs)

    token = await store_generation(pool)
    monkeypatch.setattr(OneTripConnection, "_execute", counted)
    async with pool.write_transaction() as conn:
        assert len(trips) == 1
        await conn.execute(insert(schema.intervention_plans).values(title="one trip each"))
        assert len(trips) == 2
    assert len(trips) == 3  # the commit
    monkeypatch.undo()
    assert await store_generation(pool) != token


async def test_a_read_transaction_reads_one_snapshot(
    integration_real_database: DevStream,
) -> None:
    """What an export's pages and a plan's progress rest on: on PostgreSQL, where each
    statement of a READ COMMITTED transaction would see the latest commits, too."""
    ds = integration_real_database
    plans = text("SELECT count(*) FROM intervention_plans")
    async with (
        DevStream.open(Settings(db=ds.settings.db), migrate_schema=False) as other,
        ds.pool.read_transaction() as conn,
    ):
        before = await conn.scalar(plans)
        await other.tasks.create_plan("committed while the read goes on")
        assert await conn.scalar(plans) == before
    assert len(await ds.tasks.plans()) == before + 1


async def test_savepoints_nest_inside_a_write_transaction(
    integration_real_database: DevStream,
) -> None:
    pool = integration_real_database.pool
    async with pool.write_transaction() as conn:
        await conn.execute(insert(schema.intervention_plans).values(title="outer"))
        with pytest.raises(RuntimeError):
            async with conn.begin_nested():
                await conn.execute(insert(schema.intervention_plans).values(title="inner"))
                raise RuntimeError
    titles = [plan.title for plan in await integration_real_database.queries.plans.list()]
    assert titles == ["outer"]


# --- migrations -------------------------------------------------------------------------


async def test_migrations_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    pool = ConnectionPool.create(Settings(db=str(tmp_path / "migrations.db")))
    try:
        await migrate.upgrade(pool)
        migrated = await table_row_counts(pool)
        assert await migrate.schema_drift(pool) == []
        assert (await migrate.status(pool)).at_head

        await migrate.downgrade(pool, "base")
        assert await table_row_counts(pool) == {"alembic_version": 0}
        assert (await migrate.status(pool)).current is None

        await migrate.upgrade(pool)
        assert await migrate.schema_drift(pool) == []
        assert await table_row_counts(pool) == migrated
    finally:
        await pool.close()


async def test_the_migration_that_stops_memory_ids_being_reused_keeps_every_row(
    tmp_path: Path,
) -> None:
    """Before 0009, SQLite gave the id of a deleted newest memory to the next one; the
    migration remakes the table, and new ids start past every id the change log saw."""
    path = tmp_path / "ids.db"
    pool = ConnectionPool.create(Settings(db=str(path)))
    try:
        await migrate.upgrade(pool, "0008")
    finally:
        await pool.close()
    with closing(sqlite3.connect(path)) as db, db:  # rows as 0008's code wrote them
        for n in range(4):
            db.execute(
                "INSERT INTO memory_entries (content, content_type, keywords, content_hash, "
                "embedding_status, access_count, created_at, updated_at) VALUES "
                "(?, 'context', '', ?, 'pending', 0, '2026-12-01 00:00:00', "
                "'2026-12-01 00:00:00')",
                (f"kept note {n}", content_hash(f"kept note {n}")),
            )
        db.execute("DELETE FROM memory_entries WHERE id = 4")  # the newest
        db.execute("DELETE FROM memory_changes")  # the log pruned: the ledger still names 4
        db.execute("INSERT INTO import_ledger VALUES ('an-export', 'memory', 1, 4)")
    async with DevStream.open(path) as ds:  # migrates to head
        assert [entry.id for entry in await ds.memory.entries()] == [1, 2, 3]
        after = (await ds.memory.store("stored after the migration", "context")).entry
        assert after.id == 5
        await ds.memory.delete(after.id)
        again = (await ds.memory.store("and again", "context")).entry
        assert again.id == 6
        for exact in (False, True):
            hits = (await ds.memory.search("kept note", exact=exact)).hits
            assert sorted(hit.entry.id for hit in hits) == [1, 2, 3]
        await migrate.downgrade(ds.pool, "0008")
        await migrate.upgrade(ds.pool)
        assert [entry.id for entry in await ds.memory.entries()] == [1, 2, 3, 6]
        assert await migrate.schema_drift(ds.pool) == []


async def test_a_closed_store_refuses_to_be_used_and_a_store_is_opened_from_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its block a DevStream opens no new connections (no one would close them); and
    what it is opened from is Settings, a path or a URL, not any value turned into a name."""
    path = tmp_path / "closed.db"
    async with DevStream.open(Settings(db=str(path))) as ds:
        await ds.tasks.create_plan("Kept")
    with pytest.raises(StoreClosed, match=f"the store .*{path.name} is closed"):
        await ds.tasks.create_plan("Too late")
    with pytest.raises(StoreClosed):
        await ds.memory.search("kept")
    assert ds.pool.open_connections() == 0
    async with DevStream.open(PurePosixPath(path)) as again:  # any os.PathLike
        assert [plan.title for plan in await again.tasks.plans()] == ["Kept"]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput, match="opened from Settings, a path or a URL, not 5"):
        async with DevStream.open(5):  # type: ignore[arg-type]
            pass
    assert "5" not in await asyncio.to_thread(os.listdir, tmp_path)


async def test_a_database_without_a_store_is_given_none_when_asked_not_to(
    integration_pg_server: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command leaves another application's database as it was: a file with tables of
    its own is no store for any command, even one that makes a store (its tables would go
    beside the other's); an empty PostgreSQL database is given none by a command that puts
    nothing in a store."""
    if integration_pg_server is None:
        path = tmp_path / "other-application.db"
        with closing(sqlite3.connect(path)) as db, db:
            db.execute("CREATE TABLE notes (body TEXT)")
        url = str(path)
        for command in (["memory", "search", "anything"], ["init"], ["plan", "create", "P"]):
            assert await devstream_cli("--db", url, *command) == 1
            (said,) = capsys.readouterr().err.splitlines()
            assert "holds another application's tables (notes) and no DevStream store" in said
        # `doctor` says what `init` would, not to run it.
        assert await devstream_cli("--db", url, "doctor") == 1
        schema = next(line for line in capsys.readouterr().out.splitlines() if "schema" in line)
        assert "another application's tables (notes)" in schema
        assert "run `devstream init`" not in schema
        with closing(sqlite3.connect(path)) as db:
            tables = db.execute("SELECT name FROM sqlite_master").fetchall()
        assert tables == [("notes",)]
        return
    name = postgres.unique_name("devstream_empty")
    admin = await postgres.maintenance(integration_pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        url = postgres.database_url(integration_pg_server, name)
        with pytest.raises(NotInitialised, match="holds no DevStream store"):
            async with DevStream.open(url, create_schema=False):
                pass
        pool = ConnectionPool.create(Settings(db=url))
        try:
            assert await table_row_counts(pool) == {}
        finally:
            await pool.close()
    finally:
        await postgres.drop(integration_pg_server, name)


async def test_migrated_schema_matches_metadata_and_drift_is_detected(
    integration_query_manager: QueryManager, integration_database_schema: MigratedSchema
) -> None:
    pool = integration_query_manager.pool
    assert await migrate.schema_drift(pool) == []
    if pool.on_sqlite:
        assert {"memory_fts", "memory_fts_data", "memory_fts_docsize"} <= set(
            integration_database_schema.baseline
        )

    drifted = MetaData(naming_convention=schema.metadata.naming_convention)
    for source in schema.metadata.tables.values():
        source.to_metadata(drifted)
    drifted.tables["intervention_plans"].append_column(Column("owner_id", Integer))

    diffs = await migrate.schema_drift(pool, drifted)
    assert [(d[0], d[2], d[3].name) for d in diffs] == [
        ("add_column", "intervention_plans", "owner_id")
    ]


async def test_schema_states_are_refused_with_typed_errors(tmp_path: Path) -> None:
    path = tmp_path / "states.db"
    with pytest.raises(NotInitialised, match="devstream init"):
        async with DevStream.open(path, migrate_schema=False):
            pass

    async with DevStream.open(path) as ds:
        assert (await migrate.status(ds.pool)).at_head
        await migrate.downgrade(ds.pool, "base")
    with pytest.raises(NotInitialised):
        async with DevStream.open(path, migrate_schema=False):
            pass

    async with DevStream.open(path) as ds:
        assert (await migrate.status(ds.pool)).at_head
    await _stamp(path, "9999_from_the_future")
    with pytest.raises(SchemaTooNew, match="newer than this DevStream"):
        async with DevStream.open(path):
            pass


async def test_only_sqlite_and_postgresql_urls_are_accepted() -> None:
    with pytest.raises(ConfigError, match=r"SQLite \(a file path .*\) or PostgreSQL"):
        async with DevStream.open("mysql+aiomysql://someone:hunter2@127.0.0.1/devstream"):
            pass


async def test_an_unreachable_server_is_a_storage_error_that_hides_the_password() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    url = "postgresql+asyncpg://someone:hunter2@127.0.0.1:1/devstream"
    with pytest.raises(StorageError, match="cannot reach the database") as refused:
        async with DevStream.open(url):
            pass
    assert "hunter2" not in str(refused.value)
    assert "someone:***@127.0.0.1:1" in str(refused.value)


@pytest.mark.sqlite_only("the SQLite driver's own connection")
async def test_a_connection_returned_mid_transaction_is_rolled_back(
    integration_real_database: DevStream,
) -> None:
    pool = integration_real_database.pool
    token = await store_generation(pool)
    async with pool.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, OneTripConnection)
        await driver.execute("BEGIN IMMEDIATE")  # below SQLAlchemy, which never learns of it
        await driver.execute("UPDATE store_state SET generation = 'abandoned'")
    assert await store_generation(pool) == token
    # Every pooled connection begins cleanly again, the abandoned write is gone, and its
    # write lock was released.
    plans = integration_real_database.queries.plans
    counts = await asyncio.gather(*(plans.count() for _ in range(2 * pool.stats.size)))
    assert counts == [0] * (2 * pool.stats.size)
    assert (await plans.create(title="next")).title == "next"


@pytest.mark.sqlite_only("driver queries run on the SQLite driver's connection")
async def test_driver_queries_see_the_callers_transaction_and_type_their_results(
    integration_query_manager: QueryManager,
) -> None:
    plan = await integration_query_manager.plans.create(title="typed")
    plans = schema.intervention_plans
    # One value given at run time, one bound in the statement.
    query = DriverQuery(
        select(plans).where(plans.c.id == bindparam("id"), plans.c.status == "draft")
    )
    async with integration_query_manager.pool.read_statement() as conn:
        (row,) = await query.all(conn, id=plan.id)
    assert Plan(*row) == plan  # the uncommitted plan, with aware datetimes
    broken = DriverQuery(select(column("absent", Integer)).select_from(table("missing_table")))
    async with integration_query_manager.pool.read_statement() as conn:
        with pytest.raises(StorageError, match="no such table: missing_table"):
            await broken.all(conn)


class _LockedOnLoop:
    """A driver connection on which a statement run on the event loop's thread would have to
    wait for a lock (SQLite reports it at once under busy_timeout 0); the driver's thread runs
    it. Records the thread of every statement."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real
        self.loop_thread = threading.get_ident()
        self.queries: list[bool] = []  # per statement other than a PRAGMA: on the loop's thread?

    def execute(self, sql: str, *parameters: Any) -> sqlite3.Cursor:
        on_loop = threading.get_ident() == self.loop_thread
        if not sql.startswith("PRAGMA"):
            self.queries.append(on_loop)
            if on_loop:
                raise sqlite3.OperationalError("database is locked")
        return self.real.execute(sql, *parameters)


@pytest.mark.sqlite_only("driver queries run on the SQLite driver's connection")
async def test_a_driver_query_runs_on_the_loop_and_one_that_would_wait_on_the_drivers_thread(
    integration_query_manager: QueryManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = await integration_query_manager.plans.create(title="read twice")
    plans = schema.intervention_plans
    query = DriverQuery(select(plans).where(plans.c.id == bindparam("id")))
    async with integration_query_manager.pool.read_statement() as conn:
        pooled = conn.sync_connection.connection  # type: ignore[union-attr]
        driver = cast("OneTripConnection", pooled.driver_connection)
        real = driver._conn
        threads_before = threading.active_count()
        ((busy_timeout,),) = real.execute("PRAGMA busy_timeout").fetchall()
        (row,) = await query.all(conn, id=plan.id)
        assert Plan(*row) == plan
        assert threading.active_count() == threads_before

        locked = _LockedOnLoop(real)
        monkeypatch.setattr(driver, "_connection", locked)
        (row,) = await query.all(conn, id=plan.id)
        monkeypatch.undo()
    assert Plan(*row) == plan
    assert locked.queries == [True, False]  # tried on the loop, then run on the driver's thread
    assert busy_timeout > 0
    assert real.execute("PRAGMA busy_timeout").fetchall() == [(busy_timeout,)]


async def _stamp(path: Path, revision: str) -> None:
    pool = ConnectionPool.create(Settings(db=str(path)))
    try:
        async with pool.write_transaction() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        await pool.close()


# --- foreign keys -----------------------------------------------------------------------


async def test_deleting_a_plan_cascades_and_clears_memory_links(
    integration_real_database: DevStream,
) -> None:
    """On a real database: under the seam the memory would be inserted in the same
    transaction as the delete, and PostgreSQL then checks a foreign key of the row that
    clearing its plan link updates, before clearing its task link."""
    qm = integration_real_database.queries
    plan = await qm.plans.create(title="doomed")
    phase = await qm.phases.create(plan_id=plan.id, name="only", position=0)
    task = await qm.tasks.create(phase_id=phase.id, title="first")
    other = await qm.tasks.create(phase_id=phase.id, title="second")
    await qm.dependencies.create(other.id, task.id)
    memory = await qm.memories.create(
        content="the plan's decision", content_type="decision", plan_id=plan.id, task_id=task.id
    )

    await qm.plans.delete(plan.id)

    assert await qm.phases.count() == 0
    assert await qm.tasks.count() == 0
    assert await qm.dependencies.list() == []
    kept = await qm.memories.get(memory.id)
    assert (kept.content, kept.plan_id, kept.phase_id, kept.task_id) == (
        "the plan's decision",
        None,
        None,
        None,
    )


async def test_a_task_others_depend_on_cannot_be_deleted(
    integration_query_manager: QueryManager,
    integration_sample_phase: Phase,
    integration_sample_task: MicroTask,
) -> None:
    qm = integration_query_manager
    dependent = await qm.tasks.create(phase_id=integration_sample_phase.id, title="after")
    await qm.dependencies.create(dependent.id, integration_sample_task.id)

    with pytest.raises(ConstraintViolation, match=FOREIGN_KEY_FAILED):
        await qm.tasks.delete(integration_sample_task.id)
    assert await qm.tasks.get(integration_sample_task.id) == integration_sample_task

    await qm.dependencies.delete(dependent.id, integration_sample_task.id)
    await qm.tasks.delete(integration_sample_task.id)
    with pytest.raises(NotFound):
        await qm.tasks.get(integration_sample_task.id)


async def test_references_to_missing_rows_are_refused(
    integration_query_manager: QueryManager,
) -> None:
    with pytest.raises(ConstraintViolation, match=FOREIGN_KEY_FAILED):
        await integration_query_manager.phases.create(plan_id=424242, name="orphan", position=0)
    assert await integration_query_manager.phases.count() == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("priority", 11), ("status", "done"), ("title", "   ")],
)
async def test_check_constraints_guard_plans(
    integration_query_manager: QueryManager, field: str, value: object
) -> None:
    with pytest.raises(ConstraintViolation, match=CHECK_FAILED):
        await integration_query_manager.plans.create(**{"title": "ok", field: value})


async def test_task_estimates_over_ten_minutes_are_refused(
    integration_query_manager: QueryManager, integration_sample_phase: Phase
) -> None:
    with pytest.raises(ConstraintViolation, match="estimate"):
        await integration_query_manager.tasks.create(
            phase_id=integration_sample_phase.id, title="too big", estimated_minutes=11
        )


# --- repositories -----------------------------------------------------------------------


async def test_repositories_create_get_list_update_delete(
    integration_query_manager: QueryManager, integration_sample_plan: Plan
) -> None:
    plans = integration_query_manager.plans
    second = await plans.create(title="second", status="active")

    assert await plans.get(integration_sample_plan.id) == integration_sample_plan
    assert [p.id for p in await plans.list()] == [integration_sample_plan.id, second.id]
    assert [p.id for p in await plans.list(status="active")] == [second.id]
    assert [p.id for p in await plans.list(limit=1, offset=1)] == [second.id]

    updated = await plans.update(second.id, title="renamed", priority=9)
    assert (updated.title, updated.priority, updated.status) == ("renamed", 9, "active")
    assert updated.updated_at >= second.updated_at
    assert updated.created_at == second.created_at
    assert updated.created_at.tzinfo is not None

    await plans.delete(second.id)
    with pytest.raises(NotFound, match=f"plan {second.id} not found"):
        await plans.get(second.id)
    with pytest.raises(NotFound):
        await plans.update(second.id, title="gone")
    with pytest.raises(NotFound):
        await plans.delete(second.id)
    with pytest.raises(NotFound):
        await integration_query_manager.dependencies.delete(1, 2)


async def test_repositories_refuse_unknown_and_managed_fields(
    integration_query_manager: QueryManager, integration_sample_plan: Plan
) -> None:
    plans = integration_query_manager.plans
    with pytest.raises(InvalidInput, match="unknown plan field"):
        await plans.create(title="x", colour="blue")
    with pytest.raises(InvalidInput, match="id of a plan cannot be set"):
        await plans.update(integration_sample_plan.id, id=99)
    with pytest.raises(InvalidInput, match="nothing to update"):
        await plans.update(integration_sample_plan.id)
    with pytest.raises(InvalidInput, match="unknown plan field"):
        await plans.list(colour="blue")
    assert await plans.count() == 1


async def test_memory_rows_written_through_the_query_manager_follow_the_services_rules(
    integration_devstream: DevStream,
) -> None:
    """One write path for memory rows: new content gets its own hash and loses the vector of
    the old, whichever layer writes it, and the service deduplicates against either's rows."""
    ds = integration_devstream
    stored = (await ds.memory.store("the first text", "context")).entry
    assert stored.embedding_status == "embedded"

    changed = await ds.queries.memories.update(stored.id, content="a second text")

    assert changed.content_hash == content_hash("a second text")
    assert (changed.embedding, changed.embedding_model, changed.embedding_status) == (
        None,
        None,
        "pending",
    )
    made = await ds.queries.memories.create(content="made by hand", content_type="context")
    assert (made.content_hash, made.embedding_status) == (content_hash("made by hand"), "pending")
    again = await ds.memory.store("made by hand", "context")
    assert (again.created, again.entry.id) == (False, made.id)


@pytest.mark.sqlite_only("the FTS5 table and its triggers")
async def test_memory_entries_get_a_content_hash_and_stay_searchable(
    integration_query_manager: QueryManager,
) -> None:
    memories = integration_query_manager.memories
    entry = await memories.create(
        content="WAL mode lets readers run beside a writer", content_type="learning"
    )
    assert len(entry.content_hash) == 64
    assert entry.embedding_status == "pending"

    async def fts_hits(term: str) -> list[int]:
        async with integration_query_manager.pool.read_transaction() as conn:
            rows = await conn.execute(
                text("SELECT rowid FROM memory_fts WHERE memory_fts MATCH :q"), {"q": term}
            )
            return [row[0] for row in rows]

    assert await fts_hits("readers") == [entry.id]
    await memories.update(entry.id, content="checkpoints move pages back")
    assert await fts_hits("readers") == []
    assert await fts_hits("checkpoints") == [entry.id]
    await memories.delete(entry.id)
    assert await fts_hits("checkpoints") == []


# --- metrics ----------------------------------------------------------------------------


@pytest.mark.clock
async def test_operations_are_timed_and_failures_counted(
    integration_devstream: DevStream, integration_sample_plan: Plan
) -> None:
    plans = integration_devstream.queries.plans
    for _ in range(5):
        await plans.get(integration_sample_plan.id)
    with pytest.raises(NotFound):
        await plans.get(-1)

    stats = integration_devstream.stats()
    latencies = stats["latencies"]
    assert isinstance(latencies, dict)
    assert latencies["repo.plan.get"]["count"] == 6
    assert latencies["repo.plan.create"]["count"] == 1
    assert 0 < latencies["repo.plan.get"]["p50_ms"] <= latencies["repo.plan.get"]["p99_ms"]
    assert stats["counters"] == {}
    assert stats["gauges"]["pool"]["reads"] >= 6  # type: ignore[index]


# --- several OS processes on one file ---------------------------------------------------


@pytest.mark.multiprocess
@pytest.mark.parametrize("processes", [4])
async def test_processes_write_one_file_without_lock_errors(
    integration_real_database: DevStream, processes: int
) -> None:
    """Several processes write one file at the default busy_timeout: no caller ever sees
    "database is locked". The longest write (waiting for the lock included) is printed
    (`pytest -rP`); the benchmarks run 8 processes."""
    db = integration_real_database.settings.db
    writes = 25
    env = {**os.environ, "PYTHONPATH": repo_pythonpath()}
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.concurrent_writer",
            db,
            str(writes),
            f"p{n}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=REPO_ROOT,
        )
        for n in range(processes)
    ]
    outcomes = [await worker.communicate() for worker in workers]

    for worker, (_, stderr) in zip(workers, outcomes, strict=True):
        assert "database is locked" not in stderr.decode()
        assert worker.returncode == 0, stderr.decode()[-2000:]
    longest = max(json.loads(stdout)["longest_s"] for stdout, _ in outcomes)
    print(f"{processes} writer processes: the longest write took {longest * 1000:.0f} ms")
    plans = await integration_real_database.queries.plans.list()
    assert len(plans) == processes * writes
    assert {plan.status for plan in plans} == {"active"}


# --- isolation self-tests: run in one worker, in either order ---------------------------


@pytest.mark.xdist_group("isolation")
class TestIsolation:
    """Each test commits through the QueryManager; the other must never see it."""

    async def _commit_and_check(self, qm: QueryManager, label: str) -> None:
        assert await qm.plans.count() == 0
        assert await qm.memories.count() == 0
        plan = await qm.plans.create(title=label)
        await qm.memories.create(
            content=f"written by {label}", content_type="context", plan_id=plan.id
        )
        assert [p.title for p in await qm.plans.list()] == [label]

    async def test_first_writer(self, integration_query_manager: QueryManager) -> None:
        await self._commit_and_check(integration_query_manager, "first")

    async def test_second_writer(self, integration_query_manager: QueryManager) -> None:
        await self._commit_and_check(integration_query_manager, "second")


async def test_seam_serialises_concurrent_callers(
    integration_query_manager: QueryManager,
) -> None:
    assert not integration_query_manager.pool.concurrent_reads  # one connection under the seam
    plans = integration_query_manager.plans
    created = await asyncio.gather(*(plans.create(title=f"c{n}") for n in range(20)))
    listed = await asyncio.gather(*(plans.list() for _ in range(5)))
    assert sorted(p.id for p in created) == [p.id for p in listed[0]]
    assert all(len(found) == 20 for found in listed)


async def test_pristine_baseline_counts_only_bookkeeping_rows(
    integration_database_schema: MigratedSchema, integration_backend: str
) -> None:
    nonzero = {table: rows for table, rows in integration_database_schema.baseline.items() if rows}
    fts = {"memory_fts_config", "memory_fts_data"} if integration_backend == "sqlite" else set()
    assert set(nonzero) == {"alembic_version", "store_state", *fts}
    assert nonzero["store_state"] == nonzero["alembic_version"] == 1


# --- the event loop ---------------------------------------------------------------------


async def test_running_loop_is_the_kind_requested(
    integration_event_loop: asyncio.AbstractEventLoop, pytestconfig: pytest.Config
) -> None:
    assert asyncio.get_running_loop() is integration_event_loop
    uses_uvloop = type(integration_event_loop).__module__.startswith("uvloop")
    assert uses_uvloop == (requested_loop(pytestconfig) == "uvloop")


# --- the pollution guard fires when the rollback is switched off ------------------------

GUARDED_CONFTEST = """
from tests.conftest import *  # noqa: F403
from tests.support import (
    CHECK_FAILED,
    FOREIGN_KEY_FAILED,
    REPO_ROOT,
    devstream_cli,
    repo_pythonpath,
)
from tests.integration.conftest import *  # noqa: F403
"""

SEAMLESS_OVERRIDE = """
import httpx
import pytest
from alembic import command
from pytest_httpx import HTTPXMock
from devstream.db.queries import QueryManager
from devstream.metrics import MetricsRegistry

@pytest.fixture
def integration_query_manager(integration_connection_pool, integration_database_schema):
    return QueryManager(integration_connection_pool, MetricsRegistry())  # no seam: commits
"""

LEAKY_TEST = """
async def test_writes_a_plan(integration_query_manager):
    plan = await integration_query_manager.plans.create(title="leaks")
    assert plan.id > 0
"""


@pytest.mark.xdist_group("isolation")
@pytest.mark.parametrize("rollback", [True, False], ids=["with-rollback", "rollback-off"])
@pytest.mark.subprocess
async def test_pollution_guard_fires_only_without_rollback(
    pytester: pytest.Pytester,
    pytestconfig: pytest.Config,
    monkeypatch: pytest.MonkeyPatch,
    integration_pg_server: str | None,
    rollback: bool,
) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\n"
        "asyncio_default_fixture_loop_scope = session\n"
        "asyncio_default_test_loop_scope = session\n"
    )
    pytester.makeconftest(GUARDED_CONFTEST + ("" if rollback else SEAMLESS_OVERRIDE))
    pytester.makepyfile(test_leaky=LEAKY_TEST)
    monkeypatch.setenv("PYTHONPATH", repo_pythonpath())
    if integration_pg_server is not None:  # the inner run shares this run's server
        monkeypatch.setenv(postgres.PG_URL_ENV, integration_pg_server)

    result = pytester.runpytest_subprocess(
        f"--loop={requested_loop(pytestconfig)}", "-p", "no:randomly", "-p", "no:cacheprovider"
    )

    if rollback:
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines(["*left rows behind*intervention_plans: 0 -> 1 rows*"])


async def test_migrations_refuse_to_run_without_a_connection() -> None:
    with pytest.raises(RuntimeError, match="devstream init"):
        command.upgrade(migrate.alembic_config(), "head")


# --- the command line on a real database file -------------------------------------------


async def test_cli_init_then_doctor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cli.db")
    assert await devstream_cli("--db", db, "init") == 0
    assert f"ready: sqlite+aiosqlite:///{db} (schema " in capsys.readouterr().out

    assert await devstream_cli("--db", db, "doctor") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ok", "database"],
        ["ok", "schema"],
        ["ok", "pragmas"],
        ["ok", "ollama"],
    ]
    assert "journal_mode=wal, foreign_keys=1, busy_timeout=5000, synchronous=normal" in lines[2]

    assert await devstream_cli("--db", db, "--json", "doctor") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is True
    assert {check["name"] for check in report["checks"]} == {
        "database",
        "schema",
        "pragmas",
        "ollama",
    }


async def test_cli_doctor_reports_an_uninitialised_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    assert await devstream_cli("--db", str(missing), "doctor") == 1
    assert f"FAIL  database  no DevStream store at {missing}" in capsys.readouterr().out
    assert not await asyncio.to_thread(missing.exists)  # looked at, not made
    empty = tmp_path / "empty.db"
    await asyncio.to_thread(empty.touch)
    assert await devstream_cli("--db", str(empty), "doctor") == 1
    assert "FAIL  schema    not initialised; run `devstream init`" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (lambda path: path.mkdir(), "it is not a file"),
        (lambda path: path.write_bytes(b"not a database" * 100), "file is not a database"),
    ],
    ids=["directory", "garbage-file"],
)
async def test_cli_doctor_reports_an_unusable_database(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], object],
    detail: str,
) -> None:
    path = tmp_path / "broken.db"
    make(path)
    original = path.read_bytes() if path.is_file() else None

    assert await devstream_cli("--db", str(path), "doctor") == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("FAIL  database")
    assert detail in lines[0]
    assert [line.split()[1] for line in lines] == ["database", "ollama"]

    assert await devstream_cli("--db", str(path), "init") == 1
    assert detail in capsys.readouterr().err
    if original is not None:
        assert path.read_bytes() == original  # nothing was written over it


@pytest.mark.socket
async def test_cli_doctor_checks_the_embedding_server_and_its_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_ollama: FakeOllama
) -> None:
    db = ["--db", str(tmp_path / "probe.db")]
    assert await devstream_cli(*db, "init") == 0
    capsys.readouterr()

    assert await devstream_cli(*db, "doctor") == 0
    assert "ok  ollama    not configured: the offline hashing embedder is used" in (
        capsys.readouterr().out
    )

    served = [*db, "--ollama-url", fake_ollama.url]
    assert await devstream_cli(*served, "doctor") == 0
    assert f"ok  ollama    {fake_ollama.url} (Ollama 0.0.0-fake), model embeddinggemma:latest" in (
        capsys.readouterr().out
    )

    fake_ollama.installed = ["nomic-embed-text"]
    assert await devstream_cli(*served, "doctor") == 1
    missing = capsys.readouterr().out
    assert "FAIL  ollama" in missing
    assert "has no model embeddinggemma:latest: run `ollama pull embeddinggemma`" in missing
    fake_ollama.installed = ["embeddinggemma:latest"]  # as pulled: name means name:latest
    assert await devstream_cli(*served, "doctor") == 0
    capsys.readouterr()

    fake_ollama.refuse()
    assert await devstream_cli(*served, "doctor") == 1
    down = capsys.readouterr().out
    assert f"FAIL  ollama    {fake_ollama.url} unreachable (ConnectError" in down
    assert "memories are stored pending until it answers" in down


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["memory", "add", "  ", "--type", "context"], "memory content is empty"),
        (["plan", "create", "x" * 201], "plan title has 201 characters"),
        (["import", "{bad}"], "line 1 of the export: not JSON"),
        (["memory", "add", "note", "--type", "context", "--plan", "3"], "no DevStream store"),
        (["memory", "add", "note", "--type", "context", "--task", "3"], "no DevStream store"),
    ],
    ids=["blank-memory", "long-title", "bad-export", "link-to-a-plan", "link-to-a-task"],
)
async def test_a_command_refused_where_no_store_is_leaves_none_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Commands that make a store when it is missing check their input first; a memory
    linked to a plan, phase or task needs a store that holds it."""
    bad = tmp_path / "bad.jsonl"
    await asyncio.to_thread(bad.write_text, "{not json\n", encoding="utf-8")
    new = tmp_path / "mistyped.db"
    code = await devstream_cli("--db", str(new), *(a.replace("{bad}", str(bad)) for a in args))
    assert (code, message in capsys.readouterr().err) == (1, True)
    assert await asyncio.to_thread(os.listdir, tmp_path) == ["bad.jsonl"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["task", "start", str(2**63)], "task_id must be a whole number from 1 to 2^63-1"),
        (["memory", "show", "--", "-5"], "entry_id must be a whole number from 1 to 2^63-1"),
        (["plan", "show", "0"], "plan_id must be a whole number from 1 to 2^63-1"),
        (["plan", "create", "bad \udcff title"], "plan title is not valid Unicode text"),
        (["memory", "add", "  ", "--type", "context"], "memory content is empty"),
        (["task", "fail", "1", "--error", "\udcff"], "error is not valid Unicode text"),
        (["memory", "search", "q", "--limit", "0"], "Invalid value for '--limit'"),
    ],
    ids=["huge-id", "negative-id", "zero-id", "surrogate", "blank", "surrogate-error", "limit"],
)
async def test_cli_hostile_arguments_are_one_typed_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    db = ["--db", str(tmp_path / "hostile.db")]
    assert await devstream_cli(*db, "init") == 0
    capsys.readouterr()
    code = await devstream_cli(*db, *args)
    captured = capsys.readouterr()
    assert code == (2 if message.startswith("Invalid value") else 1), captured.err
    assert captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    assert message in captured.err


async def test_json_never_holds_a_lone_surrogate_an_argument_brought(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An undecodable byte in an argument is echoed as U+FFFD: strict JSON parsers refuse
    the escape of a lone surrogate."""
    db = ["--db", str(tmp_path / "echo.db")]
    assert await devstream_cli(*db, "init") == 0
    capsys.readouterr()
    assert await devstream_cli("--json", *db, "memory", "search", "\udcffabc") == 0
    out = capsys.readouterr().out
    assert json.loads(out)["query"] == "\ufffdabc"
    assert await devstream_cli("--json", *db, "plan", "create", "bad \udcff title") == 1
    err = capsys.readouterr().err
    assert "\\udcff" not in out + err
    assert "not valid Unicode text" in json.loads(err)["error"]["message"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["bogus"], 2, "No such command 'bogus'"),
        (["--db", "{tmp}", "init"], 1, "it is not a file"),
        (["--db", "{tmp}/future.db/x.db", "init"], 1, "cannot create database folder"),
        (["--db", "{tmp}/future.db", "init"], 1, "newer than this DevStream"),
        (["--db", "{tmp}/x.db", "--ollama-url"], 2, "requires an argument"),
    ],
    ids=["unknown-command", "directory-path", "path-under-a-file", "newer-schema", "missing-value"],
)
async def test_cli_bad_input_is_one_line_and_non_zero(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    future = tmp_path / "future.db"
    async with DevStream.open(future):
        pass
    await _stamp(future, "9999_from_the_future")

    assert await devstream_cli(*(arg.format(tmp=tmp_path) for arg in args)) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("devstream: error: ")
    assert message in captured.err


async def test_cli_reports_bad_settings_and_its_version(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await devstream_cli("--version") == 0
    assert capsys.readouterr().out.startswith("devstream 0.")
    assert await devstream_cli("--json", "--version") == 0
    assert json.loads(capsys.readouterr().out)["version"].startswith("0.")
    assert await devstream_cli() == 0
    assert "Usage: devstream" in capsys.readouterr().out

    monkeypatch.setenv("DEVSTREAM_POOL_SIZE", "many")
    assert await devstream_cli("doctor") == 1
    assert capsys.readouterr().err == (
        "devstream: error: setting pool_size must be a number, got 'many' "
        "(check the config file, DEVSTREAM_* variables and flags)\n"
    )


@pytest.mark.subprocess
async def test_console_script_never_prints_a_traceback(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "devstream",
        "--db",
        str(tmp_path),
        "init",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 1
    assert out == b""
    assert err.decode().startswith(f"devstream: error: cannot use {tmp_path} as a database")
    assert b"Traceback" not in err


async def test_cli_settings_layer_file_then_environment_then_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'db = "{tmp_path / "from-file.db"}"\npool_size = 2\n')
    monkeypatch.setenv("DEVSTREAM_CONFIG", str(config))

    assert await devstream_cli("--json", "init") == 0
    assert json.loads(capsys.readouterr().out)["database"].endswith("/from-file.db")

    monkeypatch.setenv("DEVSTREAM_DB", str(tmp_path / "from-env.db"))
    assert await devstream_cli("--json", "init") == 0
    assert json.loads(capsys.readouterr().out)["database"].endswith("/from-env.db")

    assert await devstream_cli("--db", str(tmp_path / "from-flag.db"), "--json", "init") == 0
    assert json.loads(capsys.readouterr().out)["database"].endswith("/from-flag.db")

    config.write_text("pool_size = [")
    assert await devstream_cli("init") == 1
    assert capsys.readouterr().err.startswith("devstream: error: cannot read config file")


@pytest.mark.postgresql_only("starts a throwaway PostgreSQL server of its own")
async def test_a_throwaway_server_runs_with_its_settings_and_is_gone_after_its_last_user() -> None:
    """A process that takes a throwaway server and exits: the server ran with the suite's
    settings (a restart after its start), and the exit stopped it and deleted its files."""
    # A short folder of the system's (a server's socket path must fit in 107 bytes), which
    # the process takes for the system's temporary folder.
    folder = Path(tempfile.mkdtemp(prefix="ds-", dir=SYSTEM_TMP))
    run = uuid.uuid4().hex
    env = {name: value for name, value in os.environ.items() if name != postgres.PG_URL_ENV}
    env.update(PYTEST_XDIST_TESTRUNUID=run, PYTHONPATH=repo_pythonpath(), TMPDIR=str(folder))
    script = (
        "import asyncio\n"
        "from tests import postgres\n"
        "async def settings(url):\n"
        "    admin = await postgres.maintenance(url)\n"
        "    names = list(postgres.SERVER_SETTINGS)\n"
        "    values = [await admin.fetchval('SELECT current_setting($1)', n) for n in names]\n"
        "    await admin.close()\n"
        "    return dict(zip(names, values))\n"
        "print(asyncio.run(settings(postgres.server_url())))\n"
    )
    try:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", script),
            cwd=REPO_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), PROCESS_WAIT_S)
        assert process.returncode == 0, err.decode()
        assert out.decode().strip() == str(postgres.SERVER_SETTINGS)
        data = folder / f"devstream-pg-{run[:12]}"
        assert (folder / "devstream-pg-runtime").is_dir(), "the server was not made there"
        assert not data.exists(), "the server's files were left behind"
        running = [
            p for p in psutil.process_iter(["cmdline"]) if str(data) in str(p.info["cmdline"])
        ]
        assert running == [], "the server was left running"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
