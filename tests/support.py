"""Small helpers the test modules share."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def repo_pythonpath() -> str:
    """PYTHONPATH for child processes that import `tests.*` helpers."""
    return os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
