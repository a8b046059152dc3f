"""Health checks behind `devstream doctor`: each one a name, a verdict and a detail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text

from devstream.config import Settings
from devstream.db import migrate, postgres, revision, sqlite
from devstream.db.pool import ConnectionPool
from devstream.errors import DevStreamError
from devstream.memory.ollama import describe, ollama_name

OLLAMA_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


async def diagnose(settings: Settings) -> list[Check]:
    """Every check, in order; the schema and pragmas only once the database answers."""
    return [*await _database_checks(settings), await _ollama(settings)]


async def _database_checks(settings: Settings) -> list[Check]:
    try:
        settings.check_store_exists()  # a look, not a first open that makes an empty store
        pool = ConnectionPool.create(settings)
    except DevStreamError as exc:
        return [Check("database", False, str(exc))]
    try:
        if not pool.on_sqlite:
            return [await _server(pool, settings), await _schema(pool)]
        async with pool.read_transaction() as conn:
            version = await conn.scalar(text("SELECT sqlite_version()"))
        reachable = Check("database", True, f"{settings.shown_database} (SQLite {version})")
        return [reachable, await _schema(pool), await _pragmas(pool, settings)]
    except DevStreamError as exc:
        return [Check("database", False, str(exc))]
    finally:
        await pool.close()


async def _server(pool: ConnectionPool, settings: Settings) -> Check:
    """PostgreSQL: its version and pgvector's, against what DevStream needs."""
    async with pool.read_transaction() as conn:
        version = str(await conn.scalar(text("SHOW server_version")))
        number = int(await conn.scalar(text("SHOW server_version_num")) or 0)
        row = (await conn.execute(text(postgres.PGVECTOR_VERSIONS))).first()
    refusal = postgres.pgvector_refusal(*(row or (None, None)))
    if number < postgres.MIN_SERVER * 10_000:
        refusal = postgres.server_too_old(version)
    detail = (
        f"{settings.shown_database} (PostgreSQL {version}, pgvector {row and (row[0] or row[1])})"
    )
    return Check("database", refusal is None, detail if refusal is None else str(refusal))


async def _schema(pool: ConnectionPool) -> Check:
    state = await migrate.status(pool)
    if state.at_head:
        return Check("schema", True, f"at head ({state.head})")
    if state.current is None:
        refusal = await revision.foreign_refusal(pool)
        if refusal is not None:  # `init` would refuse it
            return Check("schema", False, str(refusal))
        return Check("schema", False, "not initialised; run `devstream init`")
    if not state.known:
        return Check("schema", False, f"{state.current} is newer than this DevStream")
    return Check("schema", False, f"{state.current} is behind {state.head}; run `devstream init`")


async def _pragmas(pool: ConnectionPool, settings: Settings) -> Check:
    wanted = {name: str(value) for name, value in sqlite.pragmas(settings).items()}
    named = {"synchronous": {"1": "normal"}}
    found: dict[str, str] = {}
    async with pool.read_transaction() as conn:
        for name in wanted:
            value = str(await conn.scalar(text(f"PRAGMA {name}"))).lower()
            found[name] = named.get(name, {}).get(value, value)
    wrong = [
        f"{name}={found[name]} (want {value})"
        for name, value in wanted.items()
        if found[name] != value
    ]
    detail = ", ".join(wrong) if wrong else ", ".join(f"{k}={v}" for k, v in found.items())
    return Check("pragmas", not wrong, detail)


async def _ollama(settings: Settings) -> Check:
    """Whether memories will be embedded: offline, or by a server that has the model."""
    if not settings.ollama_url:
        return Check("ollama", True, "not configured: the offline hashing embedder is used")
    base = settings.ollama_url.rstrip("/")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=OLLAMA_PROBE_TIMEOUT_S) as client:
            version = (await _get_json(client, "/api/version")).get("version", "unknown")
            listed = (await _get_json(client, "/api/tags")).get("models", [])
            names = {str(model.get("name")) for model in listed if isinstance(model, dict)}
    except (httpx.HTTPError, ValueError, TypeError) as exc:
        return Check(
            "ollama",
            False,
            f"{base} unreachable ({describe(exc)}): memories are stored pending until it "
            "answers, then `devstream memory backfill` embeds them",
        )
    wanted = ollama_name(settings.embed_model)
    if wanted not in names:
        return Check(
            "ollama",
            False,
            f"{base} (Ollama {version}) has no model {wanted}: "
            f"run `ollama pull {settings.embed_model}`",
        )
    return Check("ollama", True, f"{base} (Ollama {version}), model {wanted}")


async def _get_json(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    response = await client.get(path)
    response.raise_for_status()
    body = response.json()
    if not isinstance(body, dict):
        raise TypeError(f"{path} answered {type(body).__name__}, not an object")
    return body
