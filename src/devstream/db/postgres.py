"""PostgreSQL specifics: the engine, the vector codec, the server's requirements, its errors.

Vectors travel as DevStream keeps them everywhere else - little-endian float32 bytes - and
are stored in pgvector's `vector` type: a codec on every connection converts between the
two in pgvector's binary format (a 16-bit dimension, 16 unused bits, big-endian float32s),
so no code above this module knows which backend holds them.

asyncpg looks the `vector` type up when a connection opens; a connection opened before the
extension existed (the first migration of a new database) has no codec, so the pool is
reconnected after migrating (`ConnectionPool.reconnect`).
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Any

from sqlalchemy import URL, event, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from devstream.config import Settings
from devstream.errors import (
    ConfigError,
    ServerUnsupported,
    StorageBusy,
    StorageError,
    StorageFull,
)

DRIVER = "postgresql+asyncpg"
MIN_SERVER = 15
MIN_PGVECTOR = (0, 8)
# (installed, available) versions of pgvector; no row when the server has none.
PGVECTOR_VERSIONS = (
    "SELECT installed_version, default_version FROM pg_available_extensions WHERE name = 'vector'"
)
# Rows an HNSW index scan hands over per query (db/pg_search.py reads this many), from a
# search list of HNSW_SEARCH_LIST; past a filter it keeps scanning until it has them
# (pgvector's defaults stop at 40, unfiltered). On the benchmarks' 100k corpus, with the
# graph pg_search.py builds and the index in shared buffers, lists of 400 / 600 / 800 /
# 1,000 took 34 / 39 / 42 / 52 ms per search for a recall@10 of 0.93 / 0.95 / 0.96 / 0.97.
HNSW_DEPTH = 200
HNSW_SEARCH_LIST = 800
_HNSW_SETTINGS = {
    "hnsw.ef_search": str(HNSW_SEARCH_LIST),
    "hnsw.iterative_scan": "relaxed_order",
}
_HEADER = struct.Struct(">HH")  # dimension, unused
# SQLSTATE classes and codes DevStream maps to its own errors.
_FULL = {"53100", "53200", "54000"}  # disk_full, out_of_memory, program_limit_exceeded
_BUSY = {"55P03", "57014", "40P01"}  # lock_not_available, query_canceled (timeout), deadlock
# What a user can do about a failure to connect, by SQLSTATE.
_HINTS = {
    "3D000": "create it first with createdb or CREATE DATABASE, then run `devstream init`",
    "28P01": "check the user and password; PGPASSWORD or ~/.pgpass can supply it",
    "28000": "check the user name, and that the server's pg_hba.conf lets it connect",
}


def create_engine(settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        _checked_url(settings),
        pool_size=settings.pool_size,
        max_overflow=0,
        pool_timeout=settings.pool_timeout_s,
        connect_args={"server_settings": _server_settings(settings)},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.run_async(_register_vector)

    return engine


def _checked_url(settings: Settings) -> URL:
    """The URL, or a ConfigError for one the driver would fail on with a traceback: a
    malformed host or port, or a query option it does not take. libpq's `sslmode`, as
    hosted services hand it out, is asyncpg's `ssl` (the same modes)."""
    shown = settings.shown_database
    try:
        url = make_url(settings.database_url)
        port = url.port
    except ArgumentError as exc:
        raise ConfigError(f"cannot read the database URL {shown}: {exc}") from exc
    except ValueError as exc:  # the port, or an IPv6 host cut short, is no number
        raise ConfigError(f"the database URL {shown} has a malformed host or port") from exc
    if port is not None and not 0 < port < 2**16:
        raise ConfigError(f"the database URL {shown} has port {port}: ports go to 65535")
    query = dict(url.query)
    if "sslmode" in query:
        if "ssl" in query:
            raise ConfigError(f"the database URL {shown} gives both ssl and sslmode")
        query["ssl"] = query.pop("sslmode")
    unknown = sorted(set(query) - _URL_OPTIONS)
    if unknown:
        raise ConfigError(
            f"the database URL {shown} has options the driver does not take: {', '.join(unknown)}",
            hint=f"it takes {', '.join(sorted(_URL_OPTIONS))}",
        )
    return url.set(query=query)


# What a URL's query may set: asyncpg.connect's own options (those of a connection's
# identity and behaviour; DevStream sets the server settings) and SQLAlchemy's one for it.
_URL_OPTIONS = {
    "host",
    "port",
    "user",
    "password",
    "passfile",
    "service",
    "servicefile",
    "timeout",
    "command_timeout",
    "statement_cache_size",
    "max_cached_statement_lifetime",
    "max_cacheable_statement_size",
    "ssl",
    "direct_tls",
    "target_session_attrs",
    "krbsrvname",
    "gsslib",
    "prepared_statement_cache_size",
}


def _server_settings(settings: Settings) -> dict[str, str]:
    """Every connection's: busy_timeout_ms bounds a wait for a lock, as on SQLite (past it,
    StorageBusy); the HNSW scan's depth; and two defaults a role or database may have
    changed: backslashes in string literals as plain characters, as literals are quoted
    here, and READ COMMITTED, in which a statement run after a lock is granted sees what
    the lock's holder committed (the rules kept by locks, such as one store per content,
    rest on it; a read transaction asks for REPEATABLE READ instead, to read one snapshot)."""
    return {
        "lock_timeout": f"{settings.busy_timeout_ms}ms",
        "standard_conforming_strings": "on",
        "default_transaction_isolation": "read committed",
        **_HNSW_SETTINGS,
    }


async def _register_vector(connection: Any) -> None:
    """The `vector` codec, when the extension is installed in this database."""
    found = await connection.fetchval(
        "SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE t.typname = 'vector'"
    )
    if found is not None:
        await connection.set_type_codec(
            "vector", schema=found, encoder=encode, decoder=decode, format="binary"
        )


def encode(blob: bytes) -> bytes:
    """Float32 little-endian bytes as pgvector's binary format."""
    values = _swapped(blob)
    return _HEADER.pack(len(values), 0) + values.tobytes()


def decode(data: bytes) -> bytes:
    """pgvector's binary format as float32 little-endian bytes."""
    return _swapped(data[_HEADER.size :]).tobytes()


def _swapped(blob: bytes) -> array[float]:
    """Float32s between little- and big-endian (array, not numpy: a task command on
    PostgreSQL must not load numpy)."""
    values = array("f", blob)
    if sys.byteorder == "little":
        values.byteswap()
    return values


def server_too_old(version: str) -> ServerUnsupported:
    return ServerUnsupported(
        f"PostgreSQL {version} is too old: DevStream needs PostgreSQL {MIN_SERVER} or newer"
    )


def pgvector_refusal(installed: str | None, available: str | None) -> ServerUnsupported | None:
    """Why pgvector cannot serve this database, or None if it can."""
    if installed is None and available is None:
        return ServerUnsupported(
            "the pgvector extension is not available on this server: install pgvector "
            f"{'.'.join(map(str, MIN_PGVECTOR))} or newer, then run `devstream init`"
        )
    version = installed or available or ""
    if _version(version) < MIN_PGVECTOR:
        return ServerUnsupported(
            f"pgvector {version} is too old: DevStream needs "
            f"{'.'.join(map(str, MIN_PGVECTOR))} or newer (ALTER EXTENSION vector UPDATE)"
        )
    return None


def _version(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split(".")[:2] if part.isdigit())


def storage_error(error: BaseException) -> StorageError:
    """The typed error for a failure the server reported, by its SQLSTATE."""
    code = getattr(error, "sqlstate", None) or getattr(error.__cause__, "sqlstate", None)
    message = f"database error: {error}"
    if code in _HINTS:
        message = f"{message} ({_HINTS[code]})"
    if code in _FULL:
        return StorageFull(message)
    if code in _BUSY:
        return StorageBusy(message)
    return StorageError(message)
