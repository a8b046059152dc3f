"""Small helpers the test modules share."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from devstream.cli.app import main as cli_main

REPO_ROOT = Path(__file__).resolve().parents[1]


def repo_pythonpath() -> str:
    """PYTHONPATH for child processes that import `tests.*` helpers."""
    return os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))


async def devstream_cli(*args: str) -> int:
    """Run `devstream ARGS` in a worker thread (it starts its own event loop)."""

    def run() -> int:
        with pytest.raises(SystemExit) as exited:
            cli_main(list(args))
        return int(exited.value.code or 0)

    return await asyncio.to_thread(run)
