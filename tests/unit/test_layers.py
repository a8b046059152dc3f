"""The layer contracts ([tool.importlinter] in pyproject.toml) hold for the package as it is
and break when a forbidden import is added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(command), "--no-logo", "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root / "src")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_keeps_its_layers() -> None:
    linted = _lint_imports(REPO_ROOT)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "0 broken" in linted.stdout


def test_a_service_importing_the_other_breaks_the_layers(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(REPO_ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.pyc"))
    service = tmp_path / "src" / "devstream" / "tasks" / "service.py"
    service.write_text(service.read_text() + "\nimport devstream.memory.search\n")

    linted = _lint_imports(tmp_path)

    assert linted.returncode == 1, linted.stdout + linted.stderr
    assert "Layers: interfaces, facade, workflow, services side by side, storage BROKEN" in (
        linted.stdout
    )
    assert "devstream.tasks.service -> devstream.memory.search" in linted.stdout
