"""Typed errors, schema-state rules and column types: no database involved."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import sqlite

from devstream.db import records, schema
from devstream.db.migrate import SchemaStatus, head_revision
from devstream.db.types import UTCDateTime
from devstream.errors import (
    ConfigError,
    DevStreamError,
    NotFound,
    NotInitialised,
    SchemaTooNew,
    SchemaTooOld,
)


def test_errors_carry_a_hint_saying_what_to_do() -> None:
    assert str(NotFound("plan", 7)) == "plan 7 not found (list existing ones to find the id)"
    assert str(ConfigError("bad")).endswith(
        "(check the config file, DEVSTREAM_* variables and flags)"
    )
    assert str(DevStreamError("plain")) == "plain"
    assert str(DevStreamError("custom", hint="do this")) == "custom (do this)"


@pytest.mark.parametrize(
    ("current", "migrate", "refusal"),
    [
        ("0001", False, SchemaTooOld),
        (None, False, NotInitialised),
        ("unknown-revision", True, SchemaTooNew),
        ("0001", True, None),
        (None, True, None),
    ],
)
def test_schema_refusals(current: str | None, migrate: bool, refusal: type | None) -> None:
    # A head past 0001 stands for a future release whose database this one meets.
    state = SchemaStatus(current=current, head="0002")
    found = state.refusal(migrate=migrate)
    assert type(found) is refusal if refusal else found is None


def test_a_database_at_head_is_never_refused() -> None:
    state = SchemaStatus(current=head_revision(), head=head_revision())
    assert state.refusal(migrate=False) is None


def test_utc_datetimes_round_trip_aware() -> None:
    column = UTCDateTime()
    dialect = sqlite.dialect()
    plus_two = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert column.process_bind_param(plus_two, dialect) == datetime(
        2026, 1, 1, 10, tzinfo=timezone.utc
    )
    assert column.process_bind_param(None, dialect) is None
    with pytest.raises(ValueError, match="naive datetime"):
        column.process_bind_param(datetime(2026, 1, 1), dialect)
    naive = column.process_result_value(datetime(2026, 1, 1, 10), dialect)
    assert naive == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    assert column.process_result_value(plus_two, dialect) == plus_two
    assert column.process_result_value(None, dialect) is None


def test_records_list_their_table_columns_in_order() -> None:
    pairs = [
        (records.Plan, schema.intervention_plans),
        (records.Phase, schema.phases),
        (records.MicroTask, schema.micro_tasks),
        (records.Dependency, schema.task_dependencies),
        (records.MemoryEntry, schema.memory_entries),
        (records.TaskEvent, schema.task_events),
        (records.ContextInjection, schema.context_injections),
    ]
    for record, table in pairs:
        assert [field.name for field in fields(record)] == list(table.c.keys())
