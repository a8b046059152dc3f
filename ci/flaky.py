"""Run the integration suite again and again while every core is busy; each test's pass rate.

    python -m ci.flaky --report-dir .flaky/asyncio [--runs 10] [--repeat 100] [--repeated EXPR]

`nox -s flaky` runs it once per event loop (DEVSTREAM_TEST_LOOP picks the loop). Each of the
`--runs` runs is the whole suite under xdist in a random order of its own; then each test of
`--repeated` (a marker expression; by default the tests marked `clock`, `socket` or
`multiprocess`) runs `--repeat` times more (pytest-repeat). Throughout, CPU burners - one
process per core, at this process's priority, which the tests share - keep every core busy.
The pass rate of every test over all of its runs goes to `<report-dir>/pass-rates.txt`; the
tests that failed even once are printed, and make the exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
SUITE = "tests/integration/"
# The tests repeated by default: those whose outcome depends on time, on a server over
# sockets, or on processes racing for one file. Tests that only run a program to its end
# (marked `subprocess` alone) run in every run of the suite; `--repeated` can add them.
REPEATED = "clock or socket or multiprocess"
XDIST = ["-n", "auto", "--dist", "loadgroup"]
# A run that hangs stops here; burners outlive no run.
RUN_LIMIT_S = 2 * 3600
STOP_GRACE_S = 10.0
TABLE_FILE = "pass-rates.txt"


# CPU burners ------------------------------------------------------------------------------


def burn(parent: int, limit_s: float) -> None:
    """Keep one core busy until `limit_s` has passed or `parent` is gone (an orphan is
    adopted by another process, so its parent id changes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which stops us
    deadline = time.monotonic() + limit_s
    print("burning", flush=True)
    while os.getppid() == parent and time.monotonic() < deadline:
        sum(range(100_000))  # about a millisecond between checks


@contextlib.contextmanager
def burners(count: int, limit_s: float) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` burner processes, children of this one and so at its priority, each busy by
    the time the block starts and stopped and reaped when it ends, however it ends."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            command = [sys.executable, "-m", "ci.flaky", "burn", str(os.getpid()), str(limit_s)]
            started.append(
                subprocess.Popen(
                    command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
                )
            )
        for process in started:
            assert process.stdout is not None
            if process.stdout.readline() != b"burning\n":
                raise RuntimeError(f"CPU burner {process.pid} did not start")
        yield started
    finally:
        _stop(started)


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def load_average() -> str:
    return "load average {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(*os.getloadavg())


# Runs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One pytest invocation: its report, pytest-repeat's count (0: none), its exit code
    (None: it timed out)."""

    label: str
    report: Path
    repeat: int
    returncode: int | None


def pytest_command(report: Path, seed: int, options: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        SUITE,
        *XDIST,
        "-q",
        f"--randomly-seed={seed}",
        f"--junitxml={report}",
        *options,
    ]


def run(label: str, report: Path, options: Sequence[str], repeat: int = 0) -> Run:
    """Run the suite once with `options` while burners keep every core busy."""
    seed = secrets.randbelow(2**32)
    command = pytest_command(report, seed, options)
    report.unlink(missing_ok=True)  # never read a report of an earlier run
    cores = os.cpu_count() or 1
    with burners(cores, RUN_LIMIT_S + STOP_GRACE_S):
        print(f"{label}: random order seed {seed}; {cores} CPU burners at nice {os.nice(0)}")
        print(f"{label}: {load_average()} before", flush=True)
        print("$ " + shlex.join(command), flush=True)
        started = time.monotonic()
        try:
            done = subprocess.run(command, check=False, timeout=RUN_LIMIT_S)
            returncode: int | None = done.returncode
        except subprocess.TimeoutExpired:
            returncode = None
        elapsed = time.monotonic() - started
        print(f"{label}: {load_average()} after {elapsed:.0f} s", flush=True)
    return Run(label, report, repeat, returncode)


# Reports ----------------------------------------------------------------------------------

Outcome = Literal["passed", "failed", "skipped"]


@dataclass
class Tally:
    """What became of one test over every run: a failure or an error is `failed`; a skip
    is no run at all."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0

    def add(self, outcome: Outcome) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    @property
    def runs(self) -> int:
        return self.passed + self.failed

    @property
    def rate(self) -> float | None:
        return self.passed / self.runs if self.runs else None


@dataclass
class Tallies:
    tests: dict[str, Tally] = field(default_factory=dict)
    unreported: list[str] = field(default_factory=list)  # runs whose report is not whole

    def passed(self) -> int:
        return sum(test.passed for test in self.tests.values())

    def runs(self) -> int:
        return sum(test.runs for test in self.tests.values())

    def failed(self) -> list[str]:
        return sorted(name for name, test in self.tests.items() if test.failed)


def outcome(case: ET.Element) -> Outcome:
    tags = {child.tag for child in case}
    if tags & {"failure", "error"}:
        return "failed"
    return "skipped" if "skipped" in tags else "passed"


def outcomes(report: Path, repeat: int = 0) -> list[tuple[str, Outcome]]:
    """(test, outcome) for each test case of a JUnit XML report. pytest-repeat's `[i-N]` or
    `-i-N]` suffix is dropped, so that every repetition counts for its test."""
    repetition = re.compile(rf"(\[|-)\d+-{repeat}\]$") if repeat > 1 else None
    found: list[tuple[str, Outcome]] = []
    for case in ET.parse(report).iter("testcase"):  # noqa: S314 - our own pytest wrote it
        name = case.get("name", "")
        if repetition is not None:
            name = repetition.sub(lambda suffix: "" if suffix[1] == "[" else "]", name)
        found.append((f"{case.get('classname', '')}::{name}", outcome(case)))
    return found


def tally(runs: Iterable[Run]) -> Tallies:
    tallies = Tallies()
    for each in runs:
        try:
            found = outcomes(each.report, each.repeat)
        except (OSError, ET.ParseError) as exc:
            found = []
            tallies.unreported.append(f"{each.label}: no readable report ({exc})")
        for name, result in found:
            tallies.tests.setdefault(name, Tally()).add(result)
        if each.returncode is None:
            tallies.unreported.append(f"{each.label}: timed out after {RUN_LIMIT_S} s")
        elif each.returncode not in (0, 1):
            tallies.unreported.append(f"{each.label}: pytest exited {each.returncode}")
        elif each.returncode == 1 and found and all(result != "failed" for _, result in found):
            tallies.unreported.append(f"{each.label}: pytest exited 1, no test failed")
    return tallies


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def table(tallies: Tallies, names: Iterable[str]) -> list[str]:
    """One line per test: passes of runs, the rate, skips; the lowest rates first."""

    def order(name: str) -> tuple[float, str]:
        rate = tallies.tests[name].rate
        return (1.0 if rate is None else rate, name)

    rows = sorted(names, key=order)
    width = max((len(name) for name in rows), default=4)
    lines = [f"{'test':<{width}}  passed/runs    rate  skipped"]
    for name in rows:
        test = tallies.tests[name]
        passed = f"{test.passed}/{test.runs}"
        lines.append(f"{name:<{width}}  {passed:>11}  {_percent(test.rate):>6}  {test.skipped:>7}")
    return lines


def summary(tallies: Tallies) -> str:
    ran = [test for test in tallies.tests.values() if test.runs]
    perfect = sum(1 for test in ran if not test.failed)
    passed, runs = tallies.passed(), tallies.runs()
    overall = _percent(passed / runs if runs else None)
    return (
        f"{perfect} of {len(ran)} tests passed every time they ran; overall {passed:,} of "
        f"{runs:,} test runs passed ({overall}); tests skipped in every run (not counted): "
        f"{len(tallies.tests) - len(ran)}"
    )


def problems(tallies: Tallies) -> list[str]:
    """What fails the session: every test that failed or errored even once, every run
    without a whole report."""
    failed = [
        f"{name} failed {tallies.tests[name].failed} of {tallies.tests[name].runs} runs"
        for name in tallies.failed()
    ]
    return failed + tallies.unreported


# The command ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The integration suite's pass rate under load.")
    parser.add_argument("--runs", type=int, default=10, help="runs of the whole suite")
    parser.add_argument(
        "--repeat", type=int, default=100, help="extra runs of each test of --repeated"
    )
    parser.add_argument(
        "--repeated", default=REPEATED, help=f"a marker expression (default: '{REPEATED}')"
    )
    parser.add_argument("--report-dir", type=Path, required=True)
    parser.add_argument("--hypothesis-seed", help="one seed for every run (default: random)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.repeat < 0:
        parser.error("--runs must be at least 1 and --repeat at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["burn"]:  # a CPU burner, started by burners()
        burn(int(argv[1]), float(argv[2]))
        return 0
    args = parse_args(argv)
    args.report_dir.mkdir(parents=True, exist_ok=True)
    seed = [f"--hypothesis-seed={args.hypothesis_seed}"] if args.hypothesis_seed else []
    runs = [
        run(f"run {n}/{args.runs}", args.report_dir / f"run-{n:02}.xml", seed)
        for n in range(1, args.runs + 1)
    ]
    if args.repeat:
        repeated = ["-m", args.repeated, f"--count={args.repeat}", *seed]
        report = args.report_dir / "repeat.xml"
        runs.append(run(f"{args.repeat}x -m '{args.repeated}'", report, repeated, args.repeat))
    return report_on(tally(runs), args.report_dir / TABLE_FILE)


def report_on(tallies: Tallies, path: Path) -> int:
    """Write the whole table to `path`, print what failed and the summary; the exit code."""
    lines = [summary(tallies), "", *table(tallies, tallies.tests)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = problems(tallies)
    if tallies.failed():
        print("\n".join(table(tallies, tallies.failed())))
    print(f"{summary(tallies)}\nevery test's pass rate: {path}")
    if found:
        print("FAILED:\n  " + "\n  ".join(found))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
