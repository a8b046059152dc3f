"""The GitHub Actions job matrix derived from `nox --list --json`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import nox
import noxfile
import pytest

from ci import gha_matrix
from tests.support import REPO_ROOT

LISTING: list[dict[str, Any]] = [
    {"session": "lint", "name": "lint", "python": "3.13", "tags": [], "call_spec": {}},
    {
        "session": "integration-3.10(database, uvloop)",
        "name": "integration",
        "python": "3.10",
        "tags": ["database", "uvloop"],
        "call_spec": {"category": "database", "loop": "uvloop"},
    },
    {"session": "coverage", "name": "coverage", "python": "3.12", "tags": [], "call_spec": {}},
    {"session": "benchmark", "name": "benchmark", "python": "3.12", "tags": [], "call_spec": {}},
    {"session": "tool", "name": "tool", "python": None, "tags": [], "call_spec": {}},
]


def test_one_job_per_session_except_coverage_and_benchmark() -> None:
    assert gha_matrix.matrix(LISTING) == {
        "include": [
            {"session": "lint", "python": "3.13", "id": "lint"},
            {
                "session": "integration-3.10(database, uvloop)",
                "python": "3.10",
                "id": "integration-3-10-database-uvloop",
            },
            {"session": "tool", "python": "3.x", "id": "tool"},
        ]
    }


def test_reads_a_listing_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(LISTING[:1])))
    assert gha_matrix.main(["--stdin"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "include": [{"session": "lint", "python": "3.13", "id": "lint"}]
    }


def test_the_jobs_are_the_noxfile_table() -> None:
    """From the noxfile as it is: one job per Python and loop of the parallel session on
    SQLite (which runs every category's file), and per loop on PostgreSQL on the report
    Python, one per other default session, coverage last apart."""
    listed = subprocess.run(
        [sys.executable, "-m", "nox", "--list", "--json", "-f", str(REPO_ROOT / "noxfile.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    jobs = {job["session"] for job in gha_matrix.matrix(json.loads(listed.stdout))["include"]}
    table = {f"parallel-{py}(sqlite, {loop})" for py in noxfile.PYTHONS for loop in noxfile.LOOPS}
    table |= {f"parallel-{noxfile.REPORT_PYTHON}(postgresql, {loop})" for loop in noxfile.LOOPS}
    defaults = nox.options.sessions  # as importing the noxfile set them
    assert defaults is not None
    others = {name for name in defaults if not name.startswith("parallel")} - {"coverage"}
    assert jobs == table | others
    assert all(path.startswith("tests/integration/") for path in noxfile.CATEGORIES.values())


def test_the_workflow_runs_no_session_kept_out_of_its_matrix() -> None:
    """What the workflow's matrix job lists (every session but those EXCLUDED)."""
    listed = subprocess.run(
        [sys.executable, "-m", *gha_matrix.NOX_LIST, "-f", str(REPO_ROOT / "noxfile.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    names = {entry["name"] for entry in json.loads(listed.stdout)}
    jobs = {job["session"] for job in gha_matrix.matrix(json.loads(listed.stdout))["include"]}
    assert {"integration", "parallel", "unit", "lint", "typecheck"} <= names
    assert not names & set(gha_matrix.EXCLUDED)
    assert not any(job.startswith(gha_matrix.EXCLUDED) for job in jobs)
