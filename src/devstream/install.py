"""`devstream setup claude|codex`: DevStream's hooks and MCP server in the files each
assistant reads, merged with what is there.

- Claude Code: hooks in `.claude/settings.json` (project) or `~/.claude/settings.json`
  (user); the MCP server in `.mcp.json` or `~/.claude.json` (`mcpServers`).
- Codex: hooks in `.codex/hooks.json` or `~/.codex/hooks.json`; the MCP server in
  `.codex/config.toml` or `~/.codex/config.toml` (`[mcp_servers.devstream]`), edited with
  tomlkit so that comments and layout stay.

Setting up twice changes nothing; a file is backed up (`<name>.devstream-backup`) before it
is changed; `remove` takes out exactly DevStream's entries, found by their commands, and
leaves the rest of each file as it was. An MCP server entry named `devstream` that setup did
not write (other arguments, an environment of its own) is the user's: kept, never replaced.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
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
_COMMAND = "devstream.exe" if sys.platform == "win32" else "devstream"
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
    """The absolute path of the `devstream` command assistants are to run: the one running
    now (`.venv/bin/devstream setup …` needs no activated venv), else the one installed
    beside this Python (`python -m devstream`), else the first on PATH."""
    running, beside = Path(sys.argv[0]), Path(sys.executable).parent / _COMMAND
    for candidate in (running if running.stem == "devstream" else None, beside):
        if candidate is not None and candidate.is_file():
            return candidate.resolve()
    found = shutil.which("devstream")
    if found is None:
        raise ConfigError(
            "no devstream command to point the assistant at",
            hint="install DevStream where the assistant runs (pip install .)",
        )
    return Path(found).resolve()


def setup(assistant: Assistant, files: Files, exe: Path) -> list[str]:
    """Add DevStream's hooks and MCP server; what changed, one line per file. Both files
    are read and changed in memory first: one that cannot be changed leaves both as
    they were."""
    command = shlex.quote(str(exe))
    edits = [
        _edit_json(files.hooks, lambda doc: _add_hooks(doc, assistant, command)),
        _edit_json(files.servers, lambda doc: _add_claude_server(doc, str(exe)))
        if assistant == "claude"
        else _edit_toml(files.servers, lambda doc: _add_codex_server(doc, str(exe))),
    ]
    return [_save(path, text) for path, text in edits]


def remove(assistant: Assistant, files: Files) -> list[str]:
    """Take DevStream's hooks and MCP server out again; what changed, one line per file. A
    file left with nothing in it (as setup made it) is removed, a copy kept beside it."""
    edits = [
        _edit_json(files.hooks, _drop_hooks),
        _edit_json(files.servers, _drop_claude_server)
        if assistant == "claude"
        else _edit_toml(files.servers, _drop_codex_server),
    ]
    return [_delete(path) if _emptied(path, text) else _save(path, text) for path, text in edits]


def check(assistant: Assistant, files: Files, exe: Path) -> tuple[bool, list[str]]:
    """Whether everything setup adds is there (pointing at `exe`), and what is or is not."""
    command = f"{shlex.quote(str(exe))} hook "
    installed = _read_json(files.hooks).get("hooks")
    installed = installed if isinstance(installed, dict) else {}
    lines, complete = [], True
    for event, _, hook_event in HOOKS[assistant]:
        handlers = _handlers(installed, event)
        here = any(h.get("command") == f"{command}{hook_event}" for h in handlers)
        complete &= here
        elsewhere = any(_hook_event(h) == hook_event for h in handlers)
        state = "ok" if here else ("points elsewhere" if elsewhere else "missing")
        lines.append(f"{state}: {event} hook in {files.hooks}")
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
        if not isinstance(groups, list):
            raise _Malformed(f"hooks.{event} must be a list of hook groups")
        mine = [h for h in _handlers(hooks, event) if _hook_event(h) == hook_event]
        if mine:
            # One set up from another install (another path) is pointed at this one, in
            # place: the event would otherwise run DevStream twice.
            mine[0]["command"] = wanted
            _drop_repeats(hooks, event)
            continue
        group: dict[str, Any] = {} if matcher is None else {"matcher": matcher}
        group["hooks"] = [{"type": "command", "command": wanted, "timeout": HOOK_TIMEOUT_S}]
        groups.append(group)


def _drop_hooks(doc: dict[str, Any]) -> None:
    """Take out DevStream's handlers, and the groups and events they leave empty; what
    holds none of them stays exactly as it is."""
    hooks = doc.get("hooks")
    if not isinstance(hooks, dict):
        return
    for event in list(hooks):
        if any(_hook_event(h) for h in _handlers(hooks, event)):
            _without(hooks, event, lambda handler: _hook_event(handler) is not None)
    if not hooks:
        del doc["hooks"]


def _drop_repeats(hooks: dict[str, Any], event: str) -> None:
    """Keep the first of DevStream's handlers for each hook event it runs; drop the rest."""
    seen: set[str] = set()

    def repeated(handler: object) -> bool:
        ours = _hook_event(handler)
        if ours is None:
            return False
        if ours in seen:
            return True
        seen.add(ours)
        return False

    _without(hooks, event, repeated)


def _without(hooks: dict[str, Any], event: str, doomed: Callable[[Any], bool]) -> None:
    """Take the handlers `doomed` picks out of the event's groups, and the groups (and the
    event) left empty; a group holding none of them stays exactly as it is."""
    kept = []
    for group in hooks[event]:
        handlers = _group_handlers(group)
        theirs = [h for h in handlers if not doomed(h)]
        if len(theirs) == len(handlers):
            kept.append(group)
        elif theirs:
            kept.append({**group, "hooks": theirs})
    if kept:
        hooks[event] = kept
    else:
        del hooks[event]


def _handlers(hooks: dict[str, Any], event: str) -> list[dict[str, Any]]:
    """The event's handlers that are objects (what else a file holds is not ours to read)."""
    groups = hooks.get(event, [])
    if not isinstance(groups, list):
        return []
    found = (handler for group in groups for handler in _group_handlers(group))
    return [handler for handler in found if isinstance(handler, dict)]


def _group_handlers(group: object) -> list[Any]:
    """A hook group's handlers (none, for what is not a group with a list of them)."""
    handlers = group.get("hooks") if isinstance(group, dict) else None
    return handlers if isinstance(handlers, list) else []


def _hook_event(handler: object) -> str | None:
    """The `devstream hook EVENT` a handler of DevStream's runs, or None for another's."""
    if not isinstance(handler, dict):
        return None
    ours = _OURS.search(str(handler.get("command", "")))
    return None if ours is None else ours.group(2)


# --- MCP servers ------------------------------------------------------------------------


def _add_claude_server(doc: dict[str, Any], exe: str) -> None:
    servers = _object(doc, "mcpServers")
    if _is_users(servers.get(SERVER)):
        return
    servers[SERVER] = {"type": "stdio", "command": exe, "args": ["mcp"]}


def _drop_claude_server(doc: dict[str, Any]) -> None:
    servers = doc.get("mcpServers")
    if isinstance(servers, dict) and _is_devstream(servers.get(SERVER)):
        del servers[SERVER]
        if not servers:
            del doc["mcpServers"]


def _add_codex_server(doc: tomlkit.TOMLDocument, exe: str) -> None:
    servers = doc.setdefault("mcp_servers", tomlkit.table(is_super_table=True))
    if not isinstance(servers, dict):
        raise _Malformed("mcp_servers must be a table")
    if _is_users(servers.get(SERVER)):
        return
    # Written as the file writes its servers: an inline table holds only inline tables.
    inline = isinstance(servers, tomlkit.items.InlineTable)
    entry = tomlkit.inline_table() if inline else tomlkit.table()
    entry["command"] = exe
    entry["args"] = ["mcp"]
    servers[SERVER] = entry


def _drop_codex_server(doc: tomlkit.TOMLDocument) -> None:
    servers = doc.get("mcp_servers")
    if isinstance(servers, dict) and _is_devstream(servers.get(SERVER)):
        del servers[SERVER]
        if not servers:
            del doc["mcp_servers"]


def _server_entry(assistant: str, path: Path) -> dict[str, Any] | None:
    read = (
        _read_json(path).get("mcpServers")
        if assistant == "claude"
        else _read_toml(path).get("mcp_servers")
    )
    entry = read.get(SERVER) if isinstance(read, dict) else None
    return dict(entry) if isinstance(entry, dict) else None


def _is_devstream(entry: object) -> bool:
    """An MCP server entry as setup writes it: `devstream mcp`, with nothing else."""
    if not isinstance(entry, dict) or set(entry) - {"type", "command", "args"}:
        return False
    return Path(str(entry.get("command", ""))).name == "devstream" and entry.get("args") == ["mcp"]


def _is_users(entry: object) -> bool:
    """An entry under DevStream's name that setup did not write: the user's own."""
    return entry is not None and not _is_devstream(entry)


# --- files ------------------------------------------------------------------------------


class _Malformed(ValueError):
    """A file holds something of another shape where DevStream's entries go."""


# A file and its new text (None: unchanged).
_Edit = tuple[Path, str | None]


def _edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> _Edit:
    before = _read_json(path)
    after = json.loads(json.dumps(before))
    _changed(path, change, after)
    return path, None if after == before else json.dumps(after, indent=2) + "\n"


def _edit_toml(path: Path, change: Callable[[tomlkit.TOMLDocument], None]) -> _Edit:
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = _parse_toml(path, before)
    _changed(path, change, doc)
    after = tomlkit.dumps(doc)
    return path, None if after == before else after


# What a settings file holds once nothing is left in it: a JSON object, a TOML document.
_EMPTY = ("{}", "")


def _save(path: Path, text: str | None) -> str:
    return f"unchanged: {path}" if text is None else _write(path, text)


def _emptied(path: Path, text: str | None) -> bool:
    """Whether the edit leaves a file of its own with nothing in it (a link stays: it is
    written through, as a dotfiles setup keeps it)."""
    return text is not None and text.strip() in _EMPTY and not path.is_symlink()


def _delete(path: Path) -> str:
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    shutil.copy2(path, backup)
    path.unlink()
    return f"removed {path} (backup: {backup})"


def _changed(path: Path, change: Callable[[Any], None], doc: Any) -> None:
    try:
        change(doc)
    except _Malformed as exc:
        raise ConfigError(f"cannot change {path}: {exc}", hint="fix or move the file") from exc


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
        raise _Malformed(f"{key!r} must be an object to add DevStream to it")
    return value


def _write(path: Path, text: str) -> str:
    """Write `text` to `path` atomically, a copy of the old file kept beside it. A link is
    followed (its target is written, the link stays, as dotfile setups keep them) and the
    file keeps its mode (`~/.claude.json` holds account state its owner alone may read)."""
    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    existed = target.exists()
    staged = target.with_name(target.name + ".devstream-new")
    if existed:  # the file's mode before any of its contents is written
        staged.unlink(missing_ok=True)
        staged.touch(mode=0o600)
        shutil.copymode(target, staged)
        shutil.copy2(target, backup)
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, target)
    return f"wrote {path}" + (f" (backup: {backup})" if existed else "")
