"""The QueryManager: thin repositories over the tables, every call its own transaction.

No business rules live here (those belong to the services); only storage: typed records in
and out, unknown fields refused, missing rows reported, every operation timed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import ColumnElement, Row, Table, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from devstream.db import memory_store, records, schema
from devstream.db.pool import ConnectionPool
from devstream.db.records import MemoryEntry
from devstream.errors import InvalidInput, NotFound
from devstream.metrics import MetricsRegistry

RecordT = TypeVar("RecordT")

# Columns the store manages itself; callers never set them.
_MANAGED = frozenset({"id", "created_at", "updated_at"})


@asynccontextmanager
async def _cascading(conn: AsyncConnection) -> AsyncIterator[None]:
    """Around a delete: on PostgreSQL, a task others depend on is refused once the delete's
    cascade has run, as SQLite does at the end of the statement."""
    if conn.dialect.name == "sqlite":
        yield
        return
    await conn.execute(text(f"SET CONSTRAINTS {schema.PREREQUISITE_FK} DEFERRED"))
    yield
    await conn.execute(text(f"SET CONSTRAINTS {schema.PREREQUISITE_FK} IMMEDIATE"))


class Repository(Generic[RecordT]):
    """Create / get / list / update / delete for one table with an integer `id`."""

    kind: ClassVar[str]
    table: ClassVar[Table]
    record: type[RecordT]

    def __init__(self, pool: ConnectionPool, metrics: MetricsRegistry) -> None:
        self._pool = pool
        self._metrics = metrics

    async def create(self, **values: Any) -> RecordT:
        values = self._prepare(self._writable(values))
        with self._metrics.timed(f"repo.{self.kind}.create"):
            async with self._pool.write_transaction() as conn:
                return await self.insert_in(conn, values)

    async def get(self, id: int) -> RecordT:
        with self._metrics.timed(f"repo.{self.kind}.get"):
            async with self._pool.read_transaction() as conn:
                found = await self.get_in(conn, id)
        if found is None:
            raise NotFound(self.kind, id)
        return found

    # The same inside a transaction the caller holds (so that several steps commit together).

    async def insert_in(self, conn: AsyncConnection, values: dict[str, Any]) -> RecordT:
        result = await conn.execute(insert(self.table).values(**values).returning(*self.table.c))
        return self._to_record(result.one())

    async def get_in(self, conn: AsyncConnection, id: int) -> RecordT | None:
        row = (await conn.execute(select(self.table).where(self.table.c.id == id))).first()
        return None if row is None else self._to_record(row)

    async def update_in(
        self, conn: AsyncConnection, id: int, values: dict[str, Any]
    ) -> RecordT | None:
        """Set columns of one row; the row as now stored, or None if there is none."""
        statement = update(self.table).where(self.table.c.id == id).values(**values)
        row = (await conn.execute(statement.returning(*self.table.c))).first()
        return None if row is None else self._to_record(row)

    async def list(
        self, *, limit: int | None = None, offset: int = 0, **equal: Any
    ) -> list[RecordT]:
        """Rows whose columns equal the given values, oldest first."""
        query = select(self.table).order_by(self.table.c.id).offset(offset).limit(limit)
        for name, value in self._known(equal).items():
            query = query.where(self.table.c[name] == value)
        with self._metrics.timed(f"repo.{self.kind}.list"):
            async with self._pool.read_transaction() as conn:
                return [self._to_record(row) for row in await conn.execute(query)]

    async def count(self) -> int:
        with self._metrics.timed(f"repo.{self.kind}.count"):
            async with self._pool.read_transaction() as conn:
                return int(await conn.scalar(select(func.count()).select_from(self.table)) or 0)

    async def update(self, id: int, /, **values: Any) -> RecordT:
        values = self._writable(values)
        if not values:
            raise InvalidInput(f"nothing to update on {self.kind} {id}")
        with self._metrics.timed(f"repo.{self.kind}.update"):
            async with self._pool.write_transaction() as conn:
                updated = await self.update_in(conn, id, values)
                if updated is None:  # raised inside: the refusal rolls back
                    raise NotFound(self.kind, id)
        return updated

    async def delete(self, id: int) -> None:
        with self._metrics.timed(f"repo.{self.kind}.delete"):
            async with self._pool.write_transaction() as conn, _cascading(conn):
                result = await conn.execute(delete(self.table).where(self.table.c.id == id))
                if result.rowcount == 0:
                    raise NotFound(self.kind, id)

    def _prepare(self, values: dict[str, Any]) -> dict[str, Any]:
        """Hook for values derived from others before an insert."""
        return values

    def _writable(self, values: Mapping[str, Any]) -> dict[str, Any]:
        managed = _MANAGED.intersection(values)
        if managed:
            raise InvalidInput(f"{', '.join(sorted(managed))} of a {self.kind} cannot be set")
        return self._known(values)

    def _known(self, values: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(values).difference(self.table.c.keys())
        if unknown:
            raise InvalidInput(
                f"unknown {self.kind} field(s): {', '.join(sorted(unknown))}; "
                f"known: {', '.join(self.table.c.keys())}"
            )
        return dict(values)

    def _to_record(self, row: Row[Any]) -> RecordT:
        return self.record(**row._mapping)


class PlanRepository(Repository[records.Plan]):
    kind = "plan"
    table = schema.intervention_plans
    record = records.Plan


class PhaseRepository(Repository[records.Phase]):
    kind = "phase"
    table = schema.phases
    record = records.Phase


class TaskRepository(Repository[records.MicroTask]):
    kind = "task"
    table = schema.micro_tasks
    record = records.MicroTask


class MemoryRepository(Repository[records.MemoryEntry]):
    """Memory rows are written as the memory service writes them (`memory_store`): new
    content gets its hash and loses a vector that described the old."""

    kind = "memory"
    table = schema.memory_entries
    record = records.MemoryEntry

    async def insert_in(self, conn: AsyncConnection, values: dict[str, Any]) -> MemoryEntry:
        (entry,) = await memory_store.insert(conn, [values])
        return entry

    async def update_in(
        self, conn: AsyncConnection, id: int, values: dict[str, Any]
    ) -> MemoryEntry | None:
        return await memory_store.update_entry(conn, id, values)


class DependencyRepository:
    """Edges "task depends on task"; keyed by the pair, so no `id`."""

    kind = "dependency"
    table = schema.task_dependencies

    def __init__(self, pool: ConnectionPool, metrics: MetricsRegistry) -> None:
        self._pool = pool
        self._metrics = metrics

    async def create(self, task_id: int, depends_on_id: int) -> records.Dependency:
        with self._metrics.timed("repo.dependency.create"):
            async with self._pool.write_transaction() as conn:
                return await self.insert_in(conn, task_id, depends_on_id)

    async def insert_in(
        self, conn: AsyncConnection, task_id: int, depends_on_id: int
    ) -> records.Dependency:
        statement = insert(self.table).values(task_id=task_id, depends_on_id=depends_on_id)
        row = (await conn.execute(statement.returning(*self.table.c))).one()
        return records.Dependency(**row._mapping)

    async def get_in(
        self, conn: AsyncConnection, task_id: int, depends_on_id: int
    ) -> records.Dependency | None:
        row = (
            await conn.execute(select(self.table).where(self._edge(task_id, depends_on_id)))
        ).first()
        return None if row is None else records.Dependency(**row._mapping)

    async def list(
        self, *, task_id: int | None = None, depends_on_id: int | None = None
    ) -> list[records.Dependency]:
        query = select(self.table).order_by(self.table.c.task_id, self.table.c.depends_on_id)
        if task_id is not None:
            query = query.where(self.table.c.task_id == task_id)
        if depends_on_id is not None:
            query = query.where(self.table.c.depends_on_id == depends_on_id)
        with self._metrics.timed("repo.dependency.list"):
            async with self._pool.read_transaction() as conn:
                return [records.Dependency(**row._mapping) for row in await conn.execute(query)]

    async def delete(self, task_id: int, depends_on_id: int) -> None:
        with self._metrics.timed("repo.dependency.delete"):
            async with self._pool.write_transaction() as conn:
                if not await self.delete_in(conn, task_id, depends_on_id):
                    raise NotFound(self.kind, (task_id, depends_on_id))

    async def delete_in(self, conn: AsyncConnection, task_id: int, depends_on_id: int) -> bool:
        """Whether there was such an edge to delete."""
        statement = delete(self.table).where(self._edge(task_id, depends_on_id))
        return bool((await conn.execute(statement)).rowcount)

    def _edge(self, task_id: int, depends_on_id: int) -> ColumnElement[bool]:
        return (self.table.c.task_id == task_id) & (self.table.c.depends_on_id == depends_on_id)


class QueryManager:
    """Every repository over one pool and one metrics registry."""

    def __init__(self, pool: ConnectionPool, metrics: MetricsRegistry) -> None:
        self.pool = pool
        self.plans = PlanRepository(pool, metrics)
        self.phases = PhaseRepository(pool, metrics)
        self.tasks = TaskRepository(pool, metrics)
        self.dependencies = DependencyRepository(pool, metrics)
        self.memories = MemoryRepository(pool, metrics)
