"""The JSON an assistant sends a hook on stdin: one envelope for Claude Code and Codex."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstream.errors import InvalidInput


@dataclass(frozen=True)
class Payload:
    event: str  # hook_event_name: SessionStart, PostToolUse, Stop, ...
    session_id: str | None = None
    cwd: Path | None = None
    source: str | None = None  # SessionStart: startup, resume, clear, compact
    tool_name: str | None = None
    tool_input: dict[str, Any] = field(default_factory=dict)
    tool_response: Any = None
    error: str | None = None  # PostToolUseFailure: why the tool failed
    transcript_path: Path | None = None
    last_assistant_message: str | None = None  # Codex sends it; Claude Code has a transcript


def parse(text: str) -> Payload:
    """The payload of a hook call, or InvalidInput naming what is wrong with it."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the hook input is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidInput(f"the hook input must be a JSON object, got {type(raw).__name__}")
    tool_input = raw.get("tool_input")
    return Payload(
        event=_text(raw, "hook_event_name") or "",
        session_id=_text(raw, "session_id"),
        cwd=_path(raw, "cwd"),
        source=_text(raw, "source"),
        tool_name=_text(raw, "tool_name"),
        tool_input=tool_input if isinstance(tool_input, dict) else {},
        tool_response=raw.get("tool_response"),
        error=_text(raw, "error"),
        transcript_path=_path(raw, "transcript_path"),
        last_assistant_message=_text(raw, "last_assistant_message"),
    )


def _text(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"the hook input's {key} must be text, got {type(value).__name__}")
    return value


def _path(raw: dict[str, Any], key: str) -> Path | None:
    value = _text(raw, key)
    return Path(value) if value else None
