"""PostgreSQL's pieces that need no server: the vector codec, the requirements, the errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from devstream.config import Settings
from devstream.db import postgres
from devstream.db.pool import ConnectionPool
from devstream.errors import ConfigError, StorageBusy, StorageError, StorageFull


def test_vectors_cross_the_codec_unchanged_in_pgvectors_binary_format() -> None:
    values = np.array([0.5, -1.25, 3.0e-8, np.float32(1) / 3], dtype="<f4")
    wire = postgres.encode(values.tobytes())
    assert struct.unpack(">HH", wire[:4]) == (4, 0)  # dimension, unused
    assert np.frombuffer(wire[4:], dtype=">f4").tolist() == values.tolist()
    assert postgres.decode(wire) == values.tobytes()


@pytest.mark.parametrize(
    ("installed", "available", "says"),
    [
        (None, None, "not available on this server"),
        (None, "0.7.4", "pgvector 0.7.4 is too old"),
        ("0.5.1", "0.8.1", "pgvector 0.5.1 is too old"),
    ],
)
def test_a_server_without_a_recent_pgvector_is_refused_saying_what_to_do(
    installed: str | None, available: str | None, says: str
) -> None:
    refusal = postgres.pgvector_refusal(installed, available)
    assert refusal is not None
    assert says in str(refusal)


@pytest.mark.parametrize(("installed", "available"), [("0.8.0", "0.8.1"), (None, "0.10.2")])
def test_pgvector_from_0_8_serves(installed: str | None, available: str | None) -> None:
    assert postgres.pgvector_refusal(installed, available) is None


def test_an_old_server_is_named() -> None:
    assert "PostgreSQL 14.9 is too old" in str(postgres.server_too_old("14.9"))


class _Failure(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"failed with {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "error"),
    [
        ("53100", StorageFull),
        ("55P03", StorageBusy),
        ("57014", StorageBusy),
        ("XX000", StorageError),
    ],
)
def test_server_errors_map_to_typed_errors_by_sqlstate(
    sqlstate: str, error: type[StorageError]
) -> None:
    assert type(postgres.storage_error(_Failure(sqlstate))) is error


def test_the_sqlstate_is_read_from_the_drivers_own_error_too() -> None:
    adapted = RuntimeError("adapted")
    adapted.__cause__ = _Failure("53100")
    assert isinstance(postgres.storage_error(adapted), StorageFull)


@pytest.mark.parametrize(
    ("sqlstate", "says"),
    [("3D000", "create it first with createdb"), ("28P01", "PGPASSWORD or ~/.pgpass")],
)
def test_a_failure_to_connect_says_what_to_do(sqlstate: str, says: str) -> None:
    error = postgres.storage_error(_Failure(sqlstate))
    assert str(error).startswith(f"database error: failed with {sqlstate} (")
    assert says in str(error)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+asyncpg://me:secret@[::1/db", "has a malformed host or port"),
        ("postgresql+asyncpg://me:secret@host:port/db", "has a malformed host or port"),
        ("postgresql+asyncpg://me:secret@host:99999/db", "has port 99999: ports go to 65535"),
        ("postgresql+asyncpg://me:secret@/db?host=/run&foo=1", "does not take: foo"),
        ("postgresql+asyncpg://me:secret@/db?sslmode=require&ssl=prefer", "both ssl and sslmode"),
    ],
)
def test_a_database_url_the_driver_cannot_take_is_a_config_error(url: str, says: str) -> None:
    """Refused before any connection, with the password masked, instead of a traceback."""
    with pytest.raises(ConfigError, match=says) as refused:
        ConnectionPool.create(Settings(db=url))
    assert "secret" not in str(refused.value)
    assert "me:***@" in str(refused.value)


def test_libpqs_sslmode_is_the_drivers_ssl() -> None:
    url = "postgresql+asyncpg://me@/db?host=/run/postgresql&sslmode=verify-full"
    engine = postgres.create_engine(Settings(db=url))
    assert dict(engine.url.query) == {"host": "/run/postgresql", "ssl": "verify-full"}
