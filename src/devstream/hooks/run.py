"""`devstream hook EVENT`: answer an assistant's hook call from the store of its project.

- `session-start`: the brief (`devstream.hooks.brief`) as the session's additional context.
- `post-tool`: keep what the tool produced that is worth keeping (`devstream.hooks.capture`).
- `stop`: keep the turn's last answer, linked to the task in progress; no status changes.
- `session-end`: release what the ended session still holds (its active tasks, to pending).

The store is the one of the `cwd` the hook is given (its project's `.devstream/`), unless
one is named; outside any project nothing is injected or kept. Hooks never migrate or
create a store and never call the embedder: captures wait as pending, to be embedded by
`memory backfill` or a running `devstream mcp`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from devstream import checks
from devstream.config import Settings, load_settings
from devstream.errors import ConfigError
from devstream.hooks.capture import KINDS, Captured, as_memory, from_tool, last_answer
from devstream.hooks.payload import Payload, parse
from devstream.hooks.secrets import REDACTED
from devstream.vocabulary import BRIEF_MAX_CHARS, BRIEF_MIN_CHARS, HOOK_EVENTS

if TYPE_CHECKING:
    from devstream.app import DevStream


async def handle(
    event: str,
    stdin: str,
    flags: Mapping[str, Any],
    *,
    max_chars: int | str = BRIEF_MAX_CHARS,
    extra: Sequence[str] = (),
) -> dict[str, Any] | None:
    """The hook's JSON answer, or None when it has nothing to say. `max_chars` may come as
    the command line gave it; `extra`: arguments the command line did not know."""
    if event not in HOOK_EVENTS:
        raise ConfigError(f"unknown hook event {event!r}; use one of {', '.join(HOOK_EVENTS)}")
    if extra:
        raise ConfigError(f"unknown arguments: {' '.join(extra)}")
    max_chars = checks.whole(_number(max_chars), "--max-chars", BRIEF_MIN_CHARS)
    payload = parse(stdin)
    settings = load_settings(flags, cwd=payload.cwd)
    if not settings.db:
        return None  # outside any project, and no store named
    if event == "session-start":
        from devstream.hooks.brief import brief  # noqa: PLC0415  (the search stack)

        async with _store(settings) as ds:
            text = await brief(ds, max_chars=max_chars, session=payload.session_id)
        if not text:
            return None
        return {"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": text}}
    if event == "session-end":
        if payload.session_id:
            async with _store(settings) as ds:
                await ds.tasks.release(payload.session_id)
        return None
    captured = _captured(event, payload, settings)
    if captured is not None:
        with captured.scan:  # scanning in its child while the store opens here
            async with _store(settings) as ds:
                await _keep(ds, captured, payload.session_id)
    return None


def _number(value: int | str) -> object:
    """A number given as text, as a number; any other text stays as given (and is refused)."""
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value)
    return value


def capture_kinds(setting: str) -> frozenset[str]:
    """The kinds DEVSTREAM_CAPTURE names ("none" or empty: nothing)."""
    kinds = frozenset(kind.strip() for kind in setting.split(",") if kind.strip()) - {"none"}
    unknown = sorted(kinds - set(KINDS))
    if unknown:
        raise ConfigError(
            f"capture takes {', '.join(KINDS)} or none; unknown: {', '.join(unknown)}"
        )
    return kinds


def _captured(event: str, payload: Payload, settings: Settings) -> Captured | None:
    kinds, cap = capture_kinds(settings.capture), settings.capture_max_chars
    if event == "post-tool":
        return from_tool(payload, kinds, cap)
    answer = last_answer(payload) if "output" in kinds else None
    return as_memory(answer, "output", cap) if answer and answer.strip() else None


async def _keep(ds: DevStream, captured: Captured, session: str | None) -> None:
    """Store the capture, linked to the session's task in progress, or else to the one task
    in progress if there is only one; an answer that belongs to no task is not kept."""
    active = await ds.tasks.tasks(status="active")
    held = [task for task in active if session is not None and task.session_id == session]
    active = held or active
    if len(active) != 1 and captured.content_type == "output":
        return
    content = await asyncio.to_thread(captured.scan.result)
    if not content.replace(REDACTED, "").strip():
        return  # every line of it looked like a secret: nothing is left to remember
    if len(active) == 1:
        await ds.workflow.note(active[0].id, content, captured.content_type)
    else:
        await ds.memory.store(content, captured.content_type)


@asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[DevStream]:
    # The storage stack is most of a hook's time: most tool calls leave nothing to keep
    # and never load it.
    from devstream.app import DevStream, deferred_embedder_for  # noqa: PLC0415

    settings.check_store_exists()
    embedder = deferred_embedder_for(settings)
    async with DevStream.open(settings, migrate_schema=False, embedder=embedder) as ds:
        yield ds
