"""DevStream inside the assistant: the MCP server in-process (inside the isolation seam),
over stdio in a subprocess, and two clients racing for the next task on a real pool."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import mcp
import pytest
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from devstream import DevStream, Settings
from devstream.errors import ConfigError
from devstream.mcp import CORE, build_server, selected
from tests.integration.conftest import table_row_counts
from tests.support import devstream_cli

CORE_NAMES = [spec.name for spec in CORE]
CORE_LIST_LIMIT = 8_000  # characters of the core tool list as JSON (about 2k tokens)
SERVER_START_S = 60  # generous: a loaded machine takes seconds to import the stack

OUTLINE: dict[str, Any] = {
    "title": "Ship the importer",
    "phases": [
        {
            "name": "Parse",
            "tasks": [
                {"title": "Read the CSV header", "priority": 8},
                {"title": "Map columns to fields", "depends_on": [1]},
            ],
        },
        {"name": "Store", "tasks": [{"title": "Write rows in batches", "depends_on": [2]}]},
    ],
}


@asynccontextmanager
async def client_of(ds: DevStream, tools: str = "core") -> AsyncIterator[mcp.Client]:
    async with mcp.Client(build_server(ds, selected(tools)), raise_exceptions=True) as client:
        yield client


async def call(client: mcp.Client, tool: str, **arguments: Any) -> CallToolResult:
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    return result


def ok(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a call that succeeded."""
    assert not result.is_error, result.content
    document: dict[str, Any] | None = result.structured_content
    assert document is not None
    return document


def error_text(result: CallToolResult) -> str:
    assert result.is_error
    assert result.structured_content is None
    (content,) = result.content
    assert content.type == "text"
    assert "Traceback" not in content.text
    return content.text


def file_of(ds: DevStream) -> Path:
    path = ds.settings.sqlite_path
    assert path is not None, "a store in a file"
    return path


def undescribed(schema: dict[str, Any], where: str) -> list[str]:
    """Every property of a JSON schema (its $defs included) without a description."""
    missing = []
    for name, prop in schema.get("properties", {}).items():
        if not prop.get("description"):
            missing.append(f"{where}.{name}")
    for name, definition in schema.get("$defs", {}).items():
        missing += undescribed(definition, f"{where}.$defs.{name}")
    return missing


async def test_the_core_tools_are_few_described_annotated_and_small(
    integration_devstream: DevStream,
) -> None:
    async with client_of(integration_devstream) as client:
        listed = (await client.list_tools()).tools
    assert [tool.name for tool in listed] == CORE_NAMES
    assert len(listed) <= 7
    documents = [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed]
    size = len(json.dumps(documents, separators=(",", ":")))
    assert size <= CORE_LIST_LIMIT, f"the core tool list is {size:,} characters"
    for tool in listed:
        assert tool.description, tool.name
        assert tool.output_schema is not None, f"{tool.name} has no output schema"
        assert undescribed(tool.input_schema, tool.name) == []
    hints = {tool.name: tool.annotations for tool in listed}
    assert {name for name, hint in hints.items() if hint and hint.read_only_hint} == {
        "ready_tasks",
        "search_memory",
    }
    assert all(hint and hint.destructive_hint is not True for hint in hints.values())


async def test_a_plan_is_outlined_worked_and_remembered_through_the_tools(
    integration_devstream: DevStream,
) -> None:
    async with client_of(integration_devstream) as client:
        outlined = ok(await call(client, "outline_plan", **OUTLINE))
        first, second, third = (task["id"] for task in outlined["tasks"])
        assert [phase["name"] for phase in outlined["phases"]] == ["Parse", "Store"]
        ready = ok(await call(client, "ready_tasks"))
        assert [task["id"] for task in ready["tasks"]] == [first]  # the others wait

        started = await call(client, "start_task")
        assert ok(started)["task"]["id"] == first
        assert ok(started)["task"]["status"] == "active"
        assert started.content[0].type == "text"
        assert f"task #{first} [active]" in started.content[0].text

        done = ok(
            await call(
                client,
                "complete_task",
                task_id=first,
                output="the header row names the columns; a BOM precedes it",
                decisions=["strip the UTF-8 BOM before parsing the header"],
            )
        )
        assert done["task"]["status"] == "completed"
        assert [m["content_type"] for m in done["memories"]] == ["output", "decision"]
        assert [task["id"] for task in ok(await call(client, "ready_tasks"))["tasks"]] == [second]

        kinds = ["decision"]
        found = ok(await call(client, "search_memory", query="BOM header", content_types=kinds))
        assert [hit["content"] for hit in found["hits"]] == [
            "strip the UTF-8 BOM before parsing the header"
        ]
        context = ok(await call(client, "start_task", task_id=second))["context"]
        assert context["memory_ids"], "the memories of the plan's first task"
        failed = ok(await call(client, "fail_task", task_id=second, error="mapping is ambiguous"))
        assert failed["task"]["status"] == "failed"
        assert ok(await call(client, "ready_tasks"))["tasks"] == []
        assert ok(await call(client, "start_task"))["task"] is None
    assert (await integration_devstream.tasks.task(third)).status == "pending"


async def test_a_refusal_is_a_tool_error_with_its_message_and_writes_nothing(
    integration_devstream: DevStream,
) -> None:
    pool = integration_devstream.pool
    before = await table_row_counts(pool)
    looped = [{"title": "a", "depends_on": [1]}]
    cycle = {"title": "Loop", "phases": [{"name": "p", "tasks": looped}]}
    async with client_of(integration_devstream) as client:
        assert "depends on itself" in error_text(await call(client, "outline_plan", **cycle))
        looped = [{"title": "a", "depends_on": [2]}, {"title": "b", "depends_on": [1]}]
        cycle = {"title": "Loop", "phases": [{"name": "p", "tasks": looped}]}
        assert "cycle" in error_text(await call(client, "outline_plan", **cycle))
        unknown = {
            "title": "Far",
            "phases": [{"name": "p", "tasks": [{"title": "a", "depends_on": [9]}]}],
        }
        assert "numbered 1 to 1" in error_text(await call(client, "outline_plan", **unknown))
        long_task = [{"title": "a"}, {"title": "b", "estimated_minutes": 30}]
        too_long = {"title": "Big", "phases": [{"name": "p", "tasks": long_task}]}
        assert "estimated_minutes" in error_text(await call(client, "outline_plan", **too_long))
        assert "not found" in error_text(await call(client, "start_task", task_id=999_999))
        assert "content type" in error_text(
            await call(client, "add_memory", content="x", content_type="rumour")
        )
        assert "priority" in error_text(
            await call(client, "outline_plan", title="P", phases=[], priority=11)
        )
    assert await table_row_counts(pool) == before


async def test_a_stored_memory_is_found_and_stored_once(integration_devstream: DevStream) -> None:
    async with client_of(integration_devstream) as client:
        memory = {"content": "use WAL mode", "content_type": "decision"}
        first = ok(await call(client, "add_memory", **memory))
        again = ok(await call(client, "add_memory", **memory))
        assert (first["created"], again["created"]) == (True, False)
        assert again["memory"]["id"] == first["memory"]["id"]
        assert "embedding" not in first["memory"]
        found = ok(await call(client, "search_memory", query="WAL"))
        assert first["memory"]["id"] in [hit["id"] for hit in found["hits"]]


@pytest.mark.parametrize(
    ("choice", "names"),
    [
        (None, CORE_NAMES),
        ("core", CORE_NAMES),
        ("all", CORE_NAMES),
        ("search_memory, add_memory,search_memory", ["search_memory", "add_memory"]),
    ],
)
async def test_the_served_tools_are_chosen_by_name(
    integration_devstream: DevStream, choice: str | None, names: list[str]
) -> None:
    server = build_server(integration_devstream, selected(choice))
    assert [tool.name for tool in await server.list_tools()] == names


@pytest.mark.parametrize("choice", [",", "everything", "search_memory,drop_tables"])
async def test_an_unknown_tool_choice_is_a_config_error(choice: str) -> None:
    with pytest.raises(ConfigError, match="DEVSTREAM_MCP_TOOLS must be core, all or tool names"):
        selected(choice)


@pytest.mark.real_database
async def test_two_clients_asking_for_the_next_task_at_once_get_different_ones(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    tasks = [{"title": title} for title in ("a", "b", "c")]
    outline = {"title": "Race", "phases": [{"name": "p", "tasks": tasks}]}
    path = file_of(ds)
    other_process = DevStream.open(Settings(db=str(path)), migrate_schema=False)
    async with other_process as other, client_of(ds) as one, client_of(other) as two:
        ok(await call(one, "outline_plan", **outline))
        for winners in (2, 1):  # three ready tasks: two, then the last one
            results = await asyncio.gather(call(one, "start_task"), call(two, "start_task"))
            claimed = [ok(result)["task"] for result in results]
            ids = [task["id"] for task in claimed if task is not None]
            assert len(ids) == len(set(ids)) == winners, f"claimed: {ids}"
    assert [task.status for task in await ds.tasks.tasks()] == ["active"] * 3


@pytest.mark.real_database
async def test_the_server_follows_what_other_processes_write(
    integration_real_database: DevStream,
) -> None:
    ds = integration_real_database
    path = file_of(ds)
    async with client_of(ds) as client:
        assert ok(await call(client, "search_memory", query="flamegraph"))["hits"] == []
        async with DevStream.open(Settings(db=str(path)), migrate_schema=False) as other:
            await other.memory.store("profile with a flamegraph first", "learning")
        found = ok(await call(client, "search_memory", query="flamegraph"))
        assert [hit["content"] for hit in found["hits"]] == ["profile with a flamegraph first"]


@pytest.mark.subprocess
@pytest.mark.real_database
async def test_devstream_mcp_serves_a_real_client_over_stdio(
    integration_real_database: DevStream,
) -> None:
    path = file_of(integration_real_database)
    await integration_real_database.memory.store("the importer reads UTF-8 only", "decision")
    command = StdioServerParameters(
        command=sys.executable,
        args=["-m", "devstream", "--db", str(path), "mcp"],
        env={**os.environ, "DEVSTREAM_MCP_TOOLS": "search_memory,ready_tasks"},
        cwd=Path.cwd(),
    )
    async with mcp.Client(command, read_timeout_seconds=60) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert names == ["search_memory", "ready_tasks"]
        found = ok(await call(client, "search_memory", query="UTF-8 importer"))
        assert [hit["content"] for hit in found["hits"]] == ["the importer reads UTF-8 only"]


@asynccontextmanager
async def http_server(path: Path, token: str) -> AsyncIterator[str]:
    """`devstream mcp --http 127.0.0.1:0` in a subprocess; yields the URL it announces."""
    env = {**os.environ, "DEVSTREAM_MCP_TOKEN": token}
    command = [sys.executable, "-m", "devstream", "--db", str(path), "mcp", "--http", "127.0.0.1:0"]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        try:
            line = await asyncio.wait_for(process.stderr.readline(), SERVER_START_S)
        except asyncio.TimeoutError:
            pytest.fail(f"devstream mcp --http printed no URL within {SERVER_START_S} s")
        announced = line.decode().strip()
        assert announced.startswith("devstream mcp: serving http://127.0.0.1:"), announced
        yield announced.removeprefix("devstream mcp: serving ")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), SERVER_START_S)
        await process.stderr.read()


@pytest.mark.subprocess
@pytest.mark.socket
@pytest.mark.real_database
async def test_devstream_mcp_serves_http_on_loopback_to_the_token_and_named_hosts_only(
    integration_real_database: DevStream,
) -> None:
    path = file_of(integration_real_database)
    await integration_real_database.memory.store("releases are tagged vMAJOR.MINOR", "decision")
    token = "s3cret-for-this-test"
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t"},
        },
    }
    accept = {"accept": "application/json, text/event-stream"}
    async with http_server(path, token) as url:
        port = url.split(":")[2].split("/")[0]
        auth = {"authorization": f"Bearer {token}", **accept}
        async with httpx2.AsyncClient(timeout=SERVER_START_S) as raw:
            assert (await raw.post(url, json=initialize, headers=accept)).status_code == 401
            wrong = {**accept, "authorization": "Bearer guess"}
            assert (await raw.post(url, json=initialize, headers=wrong)).status_code == 401
            rebound = {**auth, "host": f"evil.example:{port}"}
            assert (await raw.post(url, json=initialize, headers=rebound)).status_code == 421
            page = {**auth, "origin": "http://evil.example"}
            assert (await raw.post(url, json=initialize, headers=page)).status_code == 403
        headers = {"authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=SERVER_START_S) as authorised:
            transport = streamable_http_client(url, http_client=authorised)
            async with mcp.Client(transport, read_timeout_seconds=SERVER_START_S) as client:
                assert [tool.name for tool in (await client.list_tools()).tools] == CORE_NAMES
                found = ok(await call(client, "search_memory", query="tagged releases"))
                assert [hit["content"] for hit in found["hits"]] == [
                    "releases are tagged vMAJOR.MINOR"
                ]


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ("10.1.2.3:8765", "beyond this machine, needs a token"),
        ("127.0.0.1", "takes HOST:PORT"),
        ("127.0.0.1:70000", "takes HOST:PORT"),
        ("example.com:8765", "needs an IP address or localhost"),
    ],
)
async def test_devstream_mcp_http_refuses_an_address_it_should_not_serve(
    integration_db_path: Path,
    bind: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEVSTREAM_MCP_TOKEN", raising=False)
    code = await devstream_cli("--db", str(integration_db_path), "mcp", "--http", bind)
    assert code == 1
    assert message in capsys.readouterr().err
