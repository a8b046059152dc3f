"""What a fresh `devstream` process imports: help and version load no storage stack, a
database already at head is opened without Alembic or the Ollama client's libraries, and a
command about tasks alone does not load the memory's numpy and search indexes."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstream.db import migrate, revision

HEAVY = frozenset({"sqlalchemy", "numpy", "alembic", "httpx", "rich"})
# Only the Ollama embedder needs these (rich comes in through httpx's command line).
OLLAMA_CLIENT = frozenset({"httpx", "tenacity", "rich"})
# The memory service's search indexes run on these (NumKong only for a large store).
MEMORY = frozenset({"numpy", "numkong"})
TIMEOUT_S = 60

# Runs the console entry point, then writes the top-level packages it imported to a file.
PROBE = """
import json, sys
from devstream.cli.app import main

report, args = sys.argv[1], sys.argv[2:]
try:
    main(args)
finally:
    with open(report, "w", encoding="utf-8") as file:
        json.dump(sorted({name.split(".")[0] for name in sys.modules}), file)
"""


def run_cli(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`devstream ARGS` in a fresh interpreter: its outcome and the packages it imported."""
    report = tmp_path / "modules.json"
    report.unlink(missing_ok=True)
    env = {name: value for name, value in os.environ.items() if not name.startswith("DEVSTREAM_")}
    env["DEVSTREAM_CONFIG"] = os.devnull
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"`devstream {' '.join(args)}` failed:\n{done.stderr}"
    return done, set(json.loads(report.read_text(encoding="utf-8")))


def printed_by(code: str) -> Any:
    """What `code`, run in a fresh interpreter, prints as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("args", "shows"),
    [
        (["--version"], "devstream "),
        (["--help"], "Usage: devstream [OPTIONS] COMMAND"),
        (["memory", "--help"], "Usage: devstream memory"),
        (["task", "--help"], "Usage: devstream task"),
    ],
    ids=["version", "help", "memory-help", "task-help"],
)
def test_help_and_version_load_no_storage_stack(
    tmp_path: Path, args: list[str], shows: str
) -> None:
    done, imported = run_cli(tmp_path, *args)
    assert shows in done.stdout
    assert not imported & HEAVY, (
        f"`devstream {' '.join(args)}` imported {sorted(imported & HEAVY)}; "
        "import them inside the commands that need them"
    )


def test_a_database_at_head_is_opened_without_alembic_or_the_ollama_client(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "at-head.db")
    done, imported = run_cli(tmp_path, "--db", db, "init")
    assert f"(schema {migrate.head_revision()})" in done.stdout
    assert "alembic" in imported, "init migrates, so it cannot have done so without Alembic"

    done, imported = run_cli(tmp_path, "--db", db, "task", "ready")
    assert done.stdout.strip() == "nothing is ready"
    assert "alembic" not in imported, "`task ready` on a database at head loaded Alembic"
    assert not imported & OLLAMA_CLIENT, (
        f"`task ready` without an Ollama URL imported {sorted(imported & OLLAMA_CLIENT)}; "
        "import devstream.memory.ollama only when an Ollama URL is configured"
    )
    assert not imported & MEMORY, (
        f"`task ready` imported {sorted(imported & MEMORY)}; the facade builds the memory "
        "service on first use"
    )

    done, imported = run_cli(tmp_path, "--db", db, "memory", "search", "anything")
    assert "numpy" in imported, "a search runs on the memory's indexes"
    assert "numkong" not in imported, "a small store is scanned without the SIMD library"


def test_the_head_constant_is_the_newest_migration() -> None:
    newest = migrate.head_revision()
    assert newest == revision.HEAD, (
        f"devstream.db.revision.HEAD is {revision.HEAD!r} but the newest migration is "
        f"{newest!r}: set HEAD = {newest!r}, or databases at {revision.HEAD!r} are opened "
        "without being migrated"
    )


def test_the_package_face_loads_its_names_on_first_use() -> None:
    probe = (
        "import json, sys, devstream\n"
        "loaded_early = sorted(set(sys.modules) & {'devstream.app', 'sqlalchemy'})\n"
        "from devstream import DevStream, DevStreamError, Settings, load_settings\n"
        "from devstream.app import DevStream as Facade\n"
        "print(json.dumps([loaded_early, DevStream is Facade, devstream.__all__]))\n"
    )
    loaded_early, same, public = printed_by(probe)
    assert loaded_early == [], f"`import devstream` loaded {loaded_early}"
    assert same, "devstream.DevStream is not devstream.app.DevStream"
    assert public == ["DevStream", "DevStreamError", "Settings", "load_settings"]
    with pytest.raises(AttributeError, match="has no attribute 'Missing'"):
        _ = importlib.import_module("devstream").Missing


def test_the_memory_package_loads_numpy_only_with_a_name_that_needs_it() -> None:
    probe = (
        "import json, sys, devstream.memory as memory\n"
        "bare = 'numpy' in sys.modules\n"
        "filters = memory.MemoryFilter, memory.NewMemory, memory.DeferredEmbedder\n"
        "storing = 'numpy' in sys.modules\n"
        "searching = memory.SearchResult is not None and 'numpy' in sys.modules\n"
        "print(json.dumps([bare, storing, searching]))\n"
    )
    assert printed_by(probe) == [False, False, True]
    memory = importlib.import_module("devstream.memory")
    typed = _names_imported_for_type_checkers(Path(str(memory.__file__)))
    offered = {name for names in memory._HOMES.values() for name in names}
    assert typed == offered, "devstream.memory's TYPE_CHECKING imports and _HOMES differ"
    assert all(getattr(memory, name) is not None for name in offered)
    assert offered <= set(dir(memory))


def _names_imported_for_type_checkers(source: Path) -> set[str]:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    guarded = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    return {
        alias.asname or alias.name
        for block in guarded
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_the_process_entry_point_exits_as_main_does_and_leaves_nothing_to_collect(
    tmp_path: Path,
) -> None:
    """`devstream` (and `python -m devstream`) end in `run`: the output is flushed, the exit
    code is main's, and interpreter teardown has no cyclic collection left to do."""
    probe = (
        "import gc, json, sys\n"
        "from devstream.cli.app import run\n"
        "sys.argv = ['devstream', *sys.argv[1:]]\n"
        "try:\n"
        "    run()\n"
        "except SystemExit as exc:\n"
        "    print(json.dumps([exc.code, gc.get_freeze_count() > 0]), file=sys.stderr)\n"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("DEVSTREAM_")}
    env["DEVSTREAM_CONFIG"] = os.devnull

    def ended(*command: str) -> tuple[str, str]:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False
        )
        return done.stdout, done.stderr

    printed, reported = ended(sys.executable, "-c", probe, "--version")
    assert printed.startswith("devstream ")
    assert json.loads(reported) == [0, True]
    _, reported = ended(sys.executable, "-c", probe, "no-such-command")
    assert json.loads(reported.splitlines()[-1]) == [2, True], "main's exit code is kept"
    printed, _ = ended(sys.executable, "-m", "devstream", "--version")
    assert printed.startswith("devstream ")
