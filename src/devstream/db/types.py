"""Column types that behave the same on every backend."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import DateTime, LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine, UserDefinedType


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out (SQLite keeps no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware datetime (UTC)")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else _utc(value)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":  # ISO text: parsed and made UTC in one call, not three
            return _utc_from_text
        return super().result_processor(dialect, coltype)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _utc_from_text(value: str | None) -> datetime | None:
    return None if value is None else _utc(datetime.fromisoformat(value))


class PgVector(UserDefinedType[bytes]):
    """pgvector's `vector`, without a fixed dimension. Values are float32 bytes, as on
    SQLite: the connection's codec converts them (`devstream.db.postgres`), so no bind
    cast or processing is needed here."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "vector"


# A vector as float32 little-endian bytes: a BLOB on SQLite, a `vector` on PostgreSQL.
Embedding: TypeEngine[bytes] = LargeBinary().with_variant(PgVector(), "postgresql")
