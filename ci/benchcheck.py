"""Compare a benchmark run with the committed baseline; `nox -s benchmark` runs it.

    python -m ci.benchcheck .benchmarks/figures.json --baseline ci/benchmark-baseline.json \
        [--tolerance 1.3] [--plot .benchmarks/figures.png]

Both files are what the benchmark suite writes: {"figures": [{"name", "value", "unit"}, ...]}.
A figure's ratio is its slowdown against the baseline (above 1 is worse). Times (s, ms) and
rates (".../s") are judged relative to the calibration figure of their own run, a fixed
workload that touches no DevStream code, so a uniformly faster or slower machine cancels out;
memory (MB, MiB) is judged as measured, since a machine's speed does not change it. Shown but
not judged: tail latencies (p95, p99 or max in the name), which follow other processes'
bursts; ratios (x) and figures without a unit (recall, counts), whose better direction
differs from one to the next and which the benchmarks' own assertions check; and the
references the benchmarks measure DevStream against (numpy brute force, the naive approach,
the interpreter floor), which time the machine and its libraries, not DevStream.

Exit status 1 when a ratio is above the tolerance (default and maximum 1.3), naming each such
figure; 2 when a file cannot be read, a run has no calibration figure or the tolerance is out of
range. A figure found on one side only is listed, not judged, so adding, renaming or removing a
benchmark does not fail the check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CALIBRATION = "calibration: fixed pure-Python and numpy workload"
MAX_TOLERANCE = 1.3
TIME_UNITS = {"s": 1.0, "ms": 1e-3}
MEMORY_UNITS = frozenset({"MB", "MiB"})
# Between two runs on one busy 2-core machine a p99 moved 18x: no tolerance fits them.
TAIL = re.compile(r"\b(p9\d|max)\b")
REFERENCE = re.compile(r"numpy brute-force|\bnaive\b|^floor: ")

OK = "ok"
REGRESSED = "REGRESSED"
NOT_JUDGED = "not judged"


class BenchcheckError(Exception):
    """A result file, or a tolerance, that the check cannot work with."""


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str


Run = dict[str, Figure]  # figure name -> figure


@dataclass(frozen=True)
class Row:
    name: str
    unit: str
    baseline: float | None
    latest: float | None
    ratio: float | None  # None: not judged
    verdict: str


@dataclass(frozen=True)
class Comparison:
    rows: list[Row]
    speed: float  # the latest run's calibration time over the baseline's
    tolerance: float

    @property
    def regressed(self) -> list[str]:
        return [row.name for row in self.rows if row.verdict == REGRESSED]


def load(path: Path) -> Run:
    """The figures of a result file, by name."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["figures"]
        pairs = [
            (str(entry["name"]), Figure(float(entry["value"]), str(entry["unit"])))
            for entry in entries
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BenchcheckError(f"{path} is not a benchmark result: {error!r}") from error
    run = dict(pairs)
    if len(run) != len(pairs):
        raise BenchcheckError(f"{path} names a figure more than once")
    return run


def calibration_s(run: Run, which: str) -> float:
    figure = run.get(CALIBRATION)
    if figure is None or figure.unit not in TIME_UNITS or not figure.value > 0:
        raise BenchcheckError(f"the {which} has no time for the figure {CALIBRATION!r}")
    return figure.value * TIME_UNITS[figure.unit]


def slowdown(baseline: Figure, latest: Figure, speed: float) -> float | None:
    """How much worse `latest` is than `baseline` (of the same unit), or None: not judged."""
    if baseline.value <= 0 or latest.value <= 0:
        return None
    if baseline.unit in TIME_UNITS:
        return latest.value / baseline.value / speed
    if baseline.unit.endswith("/s"):
        return baseline.value / latest.value / speed
    if baseline.unit in MEMORY_UNITS:
        return latest.value / baseline.value
    return None


def judged(name: str, baseline: Figure, latest: Figure, speed: float, tolerance: float) -> Row:
    if name == CALIBRATION:
        return Row(name, latest.unit, baseline.value, latest.value, None, "calibration")
    if baseline.unit != latest.unit:
        return Row(name, latest.unit, baseline.value, latest.value, None, "unit changed")
    tail = latest.unit in TIME_UNITS and TAIL.search(name)
    ratio = None if tail or REFERENCE.search(name) else slowdown(baseline, latest, speed)
    if ratio is None:
        return Row(name, latest.unit, baseline.value, latest.value, None, NOT_JUDGED)
    verdict = REGRESSED if ratio > tolerance else OK
    return Row(name, latest.unit, baseline.value, latest.value, ratio, verdict)


def compare(baseline: Run, latest: Run, tolerance: float = MAX_TOLERANCE) -> Comparison:
    """Judge each figure of `latest` against `baseline`, in the latest run's order."""
    if not 1.0 < tolerance <= MAX_TOLERANCE:
        raise BenchcheckError(
            f"the tolerance must be above 1 and at most {MAX_TOLERANCE}, got {tolerance}"
        )
    speed = calibration_s(latest, "latest run") / calibration_s(baseline, "baseline")
    rows = [
        judged(name, baseline[name], figure, speed, tolerance)
        if name in baseline
        else Row(name, figure.unit, None, figure.value, None, "latest only")
        for name, figure in latest.items()
    ]
    rows += [
        Row(name, figure.unit, figure.value, None, None, "baseline only")
        for name, figure in baseline.items()
        if name not in latest
    ]
    return Comparison(rows, speed, tolerance)


def _number(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.3f}{suffix}"


def table(comparison: Comparison) -> str:
    width = max([len("figure"), *(len(row.name) for row in comparison.rows)])
    lines = [
        f"the calibration took {comparison.speed:.3f}x its baseline time in this run; "
        "times and rates are divided by that before they are compared",
        f"{'figure':<{width}} {'unit':<10}{'baseline':>14}{'latest':>14}{'ratio':>9}  verdict",
    ]
    lines += [
        f"{row.name:<{width}} {row.unit:<10}{_number(row.baseline):>14}"
        f"{_number(row.latest):>14}{_number(row.ratio, 'x'):>9}  {row.verdict}"
        for row in comparison.rows
    ]
    return "\n".join(lines)


def plot(comparison: Comparison, path: Path) -> None:
    """A PNG with one horizontal bar per judged figure, its ratio, and the tolerance line."""
    # Imported here: the comparison and the table need no plotting library.
    from matplotlib.figure import Figure as Chart  # noqa: PLC0415

    names = [row.name for row in comparison.rows if row.ratio is not None]
    ratios = [row.ratio for row in comparison.rows if row.ratio is not None]
    colors = [
        "tab:red" if row.verdict == REGRESSED else "tab:blue"
        for row in comparison.rows
        if row.ratio is not None
    ]
    chart = Chart(figsize=(11, 1.5 + 0.2 * len(names)), layout="constrained")
    axes = chart.subplots()
    bars = axes.barh(range(len(names)), ratios, color=colors)
    axes.bar_label(bars, fmt="%.2f", fontsize=6, padding=2)
    axes.set_yticks(range(len(names)), names, fontsize=6)
    axes.invert_yaxis()
    axes.margins(y=0.01)
    axes.axvline(1.0, color="grey", linewidth=0.8)
    tolerance = f"tolerance {comparison.tolerance}x"
    axes.axvline(comparison.tolerance, color="tab:red", linestyle="--", label=tolerance)
    axes.set_title(f"the calibration took {comparison.speed:.3f}x its baseline time")
    axes.set_xlabel("latest / baseline, relative to the calibration (above 1: worse)")
    axes.legend(loc="lower right")
    chart.savefig(path, format="png", dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare a benchmark run with a baseline.")
    parser.add_argument("result", type=Path, help="the figures of the run (JSON)")
    parser.add_argument("--baseline", type=Path, required=True, help="the baseline (JSON)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=MAX_TOLERANCE,
        help=f"the largest ratio that passes (above 1, at most {MAX_TOLERANCE})",
    )
    parser.add_argument("--plot", type=Path, help="write a bar chart of the ratios (PNG)")
    args = parser.parse_args(argv)
    try:
        comparison = compare(load(args.baseline), load(args.result), args.tolerance)
    except BenchcheckError as error:
        print(f"benchcheck: {error}", file=sys.stderr)
        return 2
    print(table(comparison))
    if args.plot:
        plot(comparison, args.plot)
        print(f"plot written to {args.plot}")
    if comparison.regressed:
        print(f"regressed beyond {comparison.tolerance}x: {', '.join(comparison.regressed)}")
        return 1
    judged_count = sum(row.ratio is not None for row in comparison.rows)
    print(f"{judged_count} judged, none regressed beyond {comparison.tolerance}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
