"""The GitHub Actions job matrix derived from `nox --list --json`."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from ci import gha_matrix

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
    {"session": "tool", "name": "tool", "python": None, "tags": [], "call_spec": {}},
]


def test_one_job_per_session_except_coverage() -> None:
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
