"""Fresh `devstream` processes as a user starts them, measured: whole-process wall time, peak
RSS and stdout, taken by `measure_process.py`, a small launcher that times the child and
reads its peak RSS from `os.wait4` (straight from pytest, a child's `ru_maxrss` would include
pytest's). Children get a clean environment, the `child_env` fixture's: no DEVSTREAM_*
variables (so the offline hashing embedder), no user config file, no coverage.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.benchmarks.conftest import record
from tests.integration.benchmarks.corpus import vocabulary

PROCESS_TIMEOUT_S = 120.0
PYTHON = Path(sys.executable)
CONSOLE_SCRIPT = PYTHON.with_name("devstream")
LAUNCHER = Path(__file__).with_name("measure_process.py")
CLI_SEARCH_TARGET_S = {10_000: 0.8, 100_000: 1.5}
CLI_SEARCH_RSS_TARGET_MB = {100_000: 450.0}


@dataclass(frozen=True)
class Measured:
    wall_s: float
    maxrss_kib: int
    stdout: str


def common_queries() -> list[str]:
    """Five queries of four words each from the 20 most frequent: every one holds a top-5 word."""
    top = vocabulary()[:20]
    return [" ".join(top[first::5]) for first in range(5)]


def mb(kib: int) -> float:
    return kib * 1024 / 1e6


def measure(
    command: Sequence[str | Path], env: Mapping[str, str], what: str, stdin: Path | None = None
) -> Measured:
    """Run `command` once under the launcher (`stdin` on its stdin): its wall time, peak RSS
    and stdout."""
    with tempfile.TemporaryDirectory(prefix="measure-") as scratch:
        report = Path(scratch) / "report.json"
        fed = [] if stdin is None else ["--stdin", stdin]
        launcher = [PYTHON, LAUNCHER, report, PROCESS_TIMEOUT_S, *fed, *command]
        try:
            done = subprocess.run(
                [str(part) for part in launcher],
                env=dict(env),
                capture_output=True,
                text=True,
                timeout=PROCESS_TIMEOUT_S + 60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the launcher measuring {what} did not exit "
                f"(it kills the command after {PROCESS_TIMEOUT_S:g} s)"
            )
        if not report.exists():
            pytest.fail(
                f"the launcher measuring {what} wrote no report "
                f"(exit {done.returncode}): {done.stderr[-2000:]}"
            )
        figures = json.loads(report.read_text(encoding="utf-8"))
    if figures["timed_out"]:
        pytest.fail(f"{what} did not finish within {PROCESS_TIMEOUT_S:g} s (killed)")
    if figures["returncode"] != 0:
        pytest.fail(f"{what} exited {figures['returncode']}: {done.stderr[-2000:]}")
    return Measured(float(figures["wall_s"]), int(figures["maxrss_kib"]), done.stdout)


def search_command(db: str | Path, query: str) -> list[str | Path]:
    return [CONSOLE_SCRIPT, "--db", db, "memory", "search", query, "--json"]


def check_search(measured: Measured, what: str) -> None:
    try:
        document = json.loads(measured.stdout)
    except json.JSONDecodeError as exc:
        pytest.fail(f"{what} printed no JSON document ({exc}): {measured.stdout[:500]!r}")
    assert document["hits"], f"{what} found no hits"
    assert not document["degraded"], f"{what} was degraded: {document['reason']}"


def record_walls(name: str, runs: list[Measured], target_s: float) -> None:
    wall = statistics.median(measured.wall_s for measured in runs)
    record(f"{name}: median of {len(runs)}", wall, "s", f"<= {target_s:g} s", wall <= target_s)
    record(f"{name}: best of {len(runs)}", min(m.wall_s for m in runs), "s")


def record_cli_searches(name: str, runs: list[Measured], size: int) -> None:
    """Fresh-process searches of a store of `size` entries against their targets: wall time
    and peak RSS."""
    record_walls(name, runs, CLI_SEARCH_TARGET_S[size])
    rss = mb(max(measured.maxrss_kib for measured in runs))
    rss_target = CLI_SEARCH_RSS_TARGET_MB.get(size)
    record(
        f"{name}: peak RSS (max of {len(runs)})",
        rss,
        "MB",
        f"<= {rss_target:g} MB" if rss_target else "",
        None if rss_target is None else rss <= rss_target,
    )
