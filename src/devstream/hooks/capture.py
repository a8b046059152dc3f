"""What a hook keeps from the assistant's work: files its edit tools wrote (as code, with
their path), the errors of commands that failed, and its last answer of a turn.

Only tools named here are read, so the output of tools that fetch content from elsewhere
(web fetch and search, other MCP servers) is never stored: it would come back later as
injected context. Every capture is size-capped and has secret-looking lines removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstream.hooks.payload import Payload
from devstream.hooks.secrets import Scan

# Edit tools (Claude Code's and Codex's): the input field holding the text written. Codex
# hands hooks an apply_patch call's whole patch as `command`, its files named inside it.
EDIT_TOOLS = {
    "Write": "content",
    "Edit": "new_string",
    "MultiEdit": "edits",
    "NotebookEdit": "new_source",
    "apply_patch": "command",
}
COMMAND_TOOLS = frozenset({"Bash", "shell", "exec_command", "local_shell"})
KINDS = ("code", "errors", "output")  # what DEVSTREAM_CAPTURE may name; "none" for nothing
TRUNCATED = "\n[... cut: the capture limit was reached]"
SKIPPED = "\n[... cut: the middle of the output, past the capture limit]\n"


@dataclass(frozen=True)
class Captured:
    scan: Scan  # the content, secret-looking lines removed, once the scan is done
    content_type: str


def from_tool(payload: Payload, kinds: frozenset[str], max_chars: int) -> Captured | None:
    """What a PostToolUse (or PostToolUseFailure) event is worth keeping, if anything."""
    tool = payload.tool_name or ""
    if tool in EDIT_TOOLS and "code" in kinds:
        written = _written(payload.tool_input, EDIT_TOOLS[tool])
        path = payload.tool_input.get("file_path") or payload.tool_input.get("notebook_path")
        if written.strip():
            return as_memory(f"{path or '(patch)'}\n{written}", "code", max_chars)
    if tool in COMMAND_TOOLS and "errors" in kinds:
        failure = _failure(payload)
        if failure:
            command = payload.tool_input.get("command")
            shown = " ".join(command) if isinstance(command, list) else str(command or "")
            head = f"$ {shown}\n"
            return as_memory(head + _ends(failure, max_chars - len(head)), "error", max_chars)
    return None


def last_answer(payload: Payload) -> str | None:
    """The assistant's last message of the turn: sent by Codex, read from Claude Code's
    transcript (JSON lines; the last assistant entry's text parts)."""
    if payload.last_assistant_message:
        return payload.last_assistant_message
    if payload.transcript_path is None:
        return None
    answer = None
    for entry in _entries(payload.transcript_path):
        message = entry.get("message")
        if entry.get("type") == "assistant" and isinstance(message, dict):
            text = "\n".join(_texts(message.get("content")))
            answer = text or answer
    return answer


def as_memory(text: str, content_type: str, max_chars: int) -> Captured:
    """`text` as a capture: NULs dropped, cut to `max_chars`, secret-looking lines removed
    (by a scan that starts now)."""
    clean = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if len(clean) > max_chars:
        clean = _cut(clean, max_chars - len(TRUNCATED)) + TRUNCATED
    return Captured(Scan(clean), content_type)


def _cut(text: str, room: int) -> str:
    """At most `room` characters of `text`, ending with a whole line, or a whole word when
    that would keep less than half: the start of a secret cut off mid-token would no longer
    look like one to the scan. Nothing, when the first `room` characters are one token."""
    kept = text[: room + 1]  # the character after: is the cut at a line's or word's end?
    at = kept.rfind("\n")
    if at < room // 2:
        at = max(kept.rfind(" "), kept.rfind("\t"), at)
    return kept[: max(at, 0)]


def _ends(failure: str, room: int) -> str:
    """At most `room` characters of a command's failure: its first line and its end, where a
    build or a test run says what failed. The end starts where a line starts: a line's end
    without its start (`mysql -u root`, `password:`) would no longer look like a secret to
    the scan. All of it when it fits, or when the first line alone does not."""
    first, _, rest = failure.partition("\n")
    left = room - len(first) - len(SKIPPED)
    if len(failure) <= room or left <= 0:
        return failure
    kept = rest[-(left + 1) :]  # the character before: is the cut at a line's start?
    starts = [i for i in (kept.find("\n"), kept.find("\r")) if i >= 0]
    at = min(starts) if starts else len(kept) - 1  # no line starts in it: none of it
    return first + SKIPPED + kept[at + 1 :]


def _written(tool_input: dict[str, Any], field: str) -> str:
    value = tool_input.get(field)
    if isinstance(value, list):  # MultiEdit: each edit's new text
        edits = [edit for edit in value if isinstance(edit, dict)]
        return "\n".join(str(edit.get("new_string", "")) for edit in edits)
    return value if isinstance(value, str) else ""


def _failure(payload: Payload) -> str | None:
    """The error text of a command that failed, None for one that succeeded."""
    response = payload.tool_response
    if payload.event == "PostToolUseFailure":
        parts = [payload.error, response if isinstance(response, str) else None]
        return "\n".join(part for part in parts if part) or "the command failed"
    if not isinstance(response, dict):
        return None
    code = response.get("exit_code", response.get("exitCode"))
    failed = (isinstance(code, int) and code != 0) or response.get("is_error") is True
    if not failed:
        return None
    parts = [response.get(key) for key in ("stderr", "output", "stdout")]
    detail = next((part for part in parts if isinstance(part, str) and part.strip()), "")
    return f"exit code {code}\n{detail}" if code is not None else detail or "failed"


def _entries(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written as we read
            if isinstance(entry, dict):
                yield entry


def _texts(content: object) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                yield str(part.get("text", ""))
