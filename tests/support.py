"""Small helpers the test modules share."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstream import DevStream
from devstream.cli.app import main as cli_main
from devstream.db.records import MicroTask

REPO_ROOT = Path(__file__).resolve().parents[1]
# Bounds a wait on another process: generous, as an interpreter on a busy two-core machine
# starts and exits slowly; a wait that runs out is a hang, not slowness.
PROCESS_WAIT_S = 60.0


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


async def single_task(ds: DevStream, title: str) -> MicroTask:
    """A pending task alone in a new plan's only phase."""
    plan = await ds.tasks.create_plan(f"Plan for: {title}")
    phase = await ds.tasks.add_phase(plan.id, "Only phase")
    return await ds.tasks.add_task(phase.id, title)


class ManualClock:
    """A clock that moves only when a test says so: a cool-down passes when the test
    advances it, never because the machine was slow."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# How each backend words a write it refuses.
CHECK_FAILED = r"CHECK constraint failed|violates check constraint"
FOREIGN_KEY_FAILED = r"FOREIGN KEY|violates foreign key"


@dataclass(frozen=True)
class Together:
    outputs: list[bytes]  # each process's standard output
    went: float  # time.monotonic() when they were told to go
    elapsed: float  # seconds from "go" until the last one exited


async def started_together(modules: Sequence[Sequence[str]], timeout_s: float) -> Together:
    """Run each `python -m MODULE ARGS...` from the repository; each opens what it needs,
    prints "ready" and waits for "go" on stdin, which all get at once. Returns once every
    one has exited 0."""
    env = {**os.environ, "PYTHONPATH": repo_pythonpath()}
    pipe = asyncio.subprocess.PIPE
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *module,
            stdin=pipe,
            stdout=pipe,
            stderr=pipe,
            env=env,
            cwd=REPO_ROOT,
        )
        for module in modules
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
            assert line.strip() == b"ready", f"a process did not get ready: {line!r}"
        went = time.monotonic()
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(process.communicate(b"go\n") for process in processes)), timeout_s
        )
        elapsed = time.monotonic() - went
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    for process, (_, stderr) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return Together([stdout for stdout, _ in outcomes], went, elapsed)
