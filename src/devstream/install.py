"""`devstream setup claude|codex`: DevStream's hooks and MCP server in the files each
assistant reads, merged with what is there.

- Claude Code: hooks in `.claude/settings.json` (project) or `~/.claude/settings.json`
  (user); the MCP server in `.mcp.json` or `~/.claude.json` (`mcpServers`).
- Codex: hooks in `.codex/hooks.json` or `~/.codex/hooks.json`; the MCP server in
  `.codex/config.toml` or `~/.codex/config.toml` (`[mcp_servers.devstream]`), edited with
  tomlkit so that comments and layout stay.

Setting up twice changes nothing; a file is backed up (`<name>.devstream-backup`) before it
is changed; `remove` takes out exactly DevStream's entries, found by their commands.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomlkit

from devstream.errors import ConfigError
from devstream.vocabulary import HOOK_EVENTS

Assistant = Literal["claude", "codex"]
SERVER = "devstream"
BACKUP_SUFFIX = ".devstream-backup"
HOOK_TIMEOUT_S = 10
_OURS = re.compile(rf"(^|[/\\'\" ])devstream['\"]? hook ({'|'.join(HOOK_EVENTS)})$")

# Per assistant: (hook event, matcher or None, devstream hook EVENT).
HOOKS: dict[str, tuple[tuple[str, str | None, str], ...]] = {
    "claude": (
        ("SessionStart", "startup|resume|clear|compact", "session-start"),
        ("PostToolUse", "Write|Edit|MultiEdit|NotebookEdit|Bash", "post-tool"),
        ("PostToolUseFailure", "Bash", "post-tool"),
        ("Stop", None, "stop"),
        ("SessionEnd", None, "session-end"),
    ),
    "codex": (
        ("SessionStart", "startup|resume|clear", "session-start"),
        ("PostToolUse", "Bash|shell|apply_patch|Edit|Write", "post-tool"),
        ("Stop", None, "stop"),
    ),
}


@dataclass(frozen=True)
class Files:
    hooks: Path  # JSON: {"hooks": {event: [group, ...]}}
    servers: Path  # Claude: JSON `mcpServers`; Codex: TOML `mcp_servers`


def files_for(assistant: Assistant, *, project: Path | None, home: Path) -> Files:
    """Where `assistant` reads hooks and MCP servers: the project's files, or the user's."""
    if assistant == "claude":
        if project is not None:
            return Files(project / ".claude" / "settings.json", project / ".mcp.json")
        return Files(home / ".claude" / "settings.json", home / ".claude.json")
    base = (project if project is not None else home) / ".codex"
    return Files(base / "hooks.json", base / "config.toml")


def executable() -> Path:
    """The absolute path of the `devstream` command assistants are to run."""
    found = shutil.which("devstream")
    if found is None:
        raise ConfigError(
            "no devstream command on PATH to point the assistant at",
            hint="install DevStream where the assistant runs (pip install .)",
        )
    return Path(found).resolve()


def setup(assistant: Assistant, files: Files, exe: Path) -> list[str]:
    """Add DevStream's hooks and MCP server; what changed, one line per file."""
    command = shlex.quote(str(exe))
    hooks_done = _edit_json(files.hooks, lambda doc: _add_hooks(doc, assistant, command))
    servers_done = (
        _edit_json(files.servers, lambda doc: _add_claude_server(doc, str(exe)))
        if assistant == "claude"
        else _edit_toml(files.servers, lambda doc: _add_codex_server(doc, str(exe)))
    )
    return [hooks_done, servers_done]


def remove(assistant: Assistant, files: Files) -> list[str]:
    """Take DevStream's hooks and MCP server out again; what changed, one line per file."""
    hooks_done = _edit_json(files.hooks, _drop_hooks)
    servers_done = (
        _edit_json(files.servers, _drop_claude_server)
        if assistant == "claude"
        else _edit_toml(files.servers, _drop_codex_server)
    )
    return [hooks_done, servers_done]


def check(assistant: Assistant, files: Files, exe: Path) -> tuple[bool, list[str]]:
    """Whether everything setup adds is there (pointing at `exe`), and what is or is not."""
    command = f"{shlex.quote(str(exe))} hook "
    installed = _read_json(files.hooks).get("hooks", {})
    lines, complete = [], True
    for event, _, hook_event in HOOKS[assistant]:
        commands = [handler.get("command", "") for handler in _handlers(installed, event)]
        here = f"{command}{hook_event}" in commands
        complete &= here
        lines.append(f"{'ok' if here else 'missing'}: {event} hook in {files.hooks}")
    server = _server_entry(assistant, files.servers)
    here = server is not None and Path(str(server.get("command", ""))) == exe
    complete &= here
    state = "ok" if here else ("points elsewhere" if server else "missing")
    lines.append(f"{state}: MCP server {SERVER!r} in {files.servers}")
    return complete, lines


# --- hooks ------------------------------------------------------------------------------


def _add_hooks(doc: dict[str, Any], assistant: str, command: str) -> None:
    hooks = _object(doc, "hooks")
    for event, matcher, hook_event in HOOKS[assistant]:
        wanted = f"{command} hook {hook_event}"
        groups = hooks.setdefault(event, [])
        if any(h.get("command") == wanted for h in _handlers(hooks, event)):
            continue
        group: dict[str, Any] = {} if matcher is None else {"matcher": matcher}
        group["hooks"] = [{"type": "command", "command": wanted, "timeout": HOOK_TIMEOUT_S}]
        groups.append(group)


def _drop_hooks(doc: dict[str, Any]) -> None:
    hooks = doc.get("hooks")
    if not isinstance(hooks, dict):
        return
    for event in list(hooks):
        kept = []
        for group in hooks[event] if isinstance(hooks[event], list) else []:
            theirs = [h for h in group.get("hooks", []) if not _ours(h)]
            if theirs:
                kept.append({**group, "hooks": theirs})
            elif not group.get("hooks"):
                kept.append(group)  # not DevStream's to take out
        if kept:
            hooks[event] = kept
        else:
            del hooks[event]
    if not hooks:
        del doc["hooks"]


def _handlers(hooks: dict[str, Any], event: str) -> list[dict[str, Any]]:
    groups = hooks.get(event, [])
    return [
        handler
        for group in groups
        if isinstance(group, dict)
        for handler in group.get("hooks", [])
        if isinstance(handler, dict)
    ]


def _ours(handler: object) -> bool:
    return isinstance(handler, dict) and bool(_OURS.search(str(handler.get("command", ""))))


# --- MCP servers ------------------------------------------------------------------------


def _add_claude_server(doc: dict[str, Any], exe: str) -> None:
    _object(doc, "mcpServers")[SERVER] = {"type": "stdio", "command": exe, "args": ["mcp"]}


def _drop_claude_server(doc: dict[str, Any]) -> None:
    servers = doc.get("mcpServers")
    if isinstance(servers, dict) and _is_devstream(servers.get(SERVER)):
        del servers[SERVER]
        if not servers:
            del doc["mcpServers"]


def _add_codex_server(doc: tomlkit.TOMLDocument, exe: str) -> None:
    servers = doc.setdefault("mcp_servers", tomlkit.table(is_super_table=True))
    entry = tomlkit.table()
    entry["command"] = exe
    entry["args"] = ["mcp"]
    servers[SERVER] = entry


def _drop_codex_server(doc: tomlkit.TOMLDocument) -> None:
    servers = doc.get("mcp_servers")
    if servers is not None and _is_devstream(servers.get(SERVER)):
        del servers[SERVER]
        if not servers:
            del doc["mcp_servers"]


def _server_entry(assistant: str, path: Path) -> dict[str, Any] | None:
    if assistant == "claude":
        entry = _read_json(path).get("mcpServers", {}).get(SERVER)
    else:
        entry = _read_toml(path).get("mcp_servers", {}).get(SERVER)
    return dict(entry) if isinstance(entry, dict) else None


def _is_devstream(entry: object) -> bool:
    """An MCP server entry that runs `devstream mcp`."""
    if not isinstance(entry, dict):
        return False
    args = list(entry.get("args", []))
    return Path(str(entry.get("command", ""))).name == "devstream" and args[:1] == ["mcp"]


# --- files ------------------------------------------------------------------------------


def _edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> str:
    before = _read_json(path)
    after = json.loads(json.dumps(before))
    change(after)
    if after == before:
        return f"unchanged: {path}"
    return _write(path, json.dumps(after, indent=2) + "\n")


def _edit_toml(path: Path, change: Callable[[tomlkit.TOMLDocument], None]) -> str:
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = _parse_toml(path, before)
    change(doc)
    after = tomlkit.dumps(doc)
    if after == before:
        return f"unchanged: {path}"
    return _write(path, after)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint="fix or move the file") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} does not hold a JSON object", hint="fix or move the file")
    return doc


def _read_toml(path: Path) -> tomlkit.TOMLDocument:
    return _parse_toml(path, path.read_text(encoding="utf-8") if path.exists() else "")


def _parse_toml(path: Path, text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint="fix or move the file") from exc


def _object(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.setdefault(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key!r} must be an object to add DevStream to it")
    return value


def _write(path: Path, text: str) -> str:
    """Write `text` to `path` atomically, a copy of the old file kept beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    existed = path.exists()
    if existed:
        shutil.copy2(path, backup)
    staged = path.with_name(path.name + ".devstream-new")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, path)
    return f"wrote {path}" + (f" (backup: {backup})" if existed else "")
