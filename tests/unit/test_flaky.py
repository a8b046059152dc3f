"""The flaky session's logic: JUnit reports into a pass-rate table, the verdict, the burners."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ci import flaky
from tests.leaks import Stock
from tests.support import REPO_ROOT

BOUND_S = 60.0  # a generous bound on what should take milliseconds

CASES = {
    "passes": "",
    "fails": '<failure message="assert 1 == 2">trace</failure>',
    "errors": '<error message="failed on setup">trace</error>',
    "skips": '<skipped type="pytest.skip" message="not here"/>',
}


def junit(path: Path, cases: dict[str, str], classname: str = "tests.integration.test_x") -> Path:
    """A report as pytest writes it: one test case per name, its outcome as its child."""
    body = "".join(
        f'<testcase classname="{classname}" name="{name}" time="0.1">{child}</testcase>'
        for name, child in cases.items()
    )
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite>{body}</testsuite></testsuites>')
    return path


def reported(tmp_path: Path, *reports: dict[str, str]) -> list[flaky.Run]:
    return [
        flaky.Run(f"run {n}", junit(tmp_path / f"run-{n}.xml", cases), repeat=0, returncode=0)
        for n, cases in enumerate(reports, 1)
    ]


def poll(condition: Callable[[], bool], what: str) -> None:
    """Wait until `condition` holds, or fail saying `what` did not happen."""
    deadline = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {BOUND_S:.0f} s"
        time.sleep(0.01)


def gone(pid: int) -> bool:
    """No such process, or one that has exited and waits to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in {"Z", "X"}


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of a process, in clock ticks (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


# --- reports into the table -----------------------------------------------------------------


def test_each_test_is_tallied_over_the_runs_and_a_skip_is_no_run(tmp_path: Path) -> None:
    runs = reported(tmp_path, CASES, {**CASES, "fails": "", "errors": CASES["skips"]})
    tallies = flaky.tally(runs)
    name = "tests.integration.test_x::{}".format
    assert tallies.tests == {
        name("passes"): flaky.Tally(passed=2),
        name("fails"): flaky.Tally(passed=1, failed=1),
        name("errors"): flaky.Tally(failed=1, skipped=1),
        name("skips"): flaky.Tally(skipped=2),
    }
    assert (tallies.passed(), tallies.runs()) == (3, 5)
    assert tallies.failed() == [name("errors"), name("fails")]
    assert flaky.summary(tallies) == (
        "1 of 3 tests passed every time they ran; overall 3 of 5 test runs passed (60.0%); "
        "tests skipped in every run (not counted): 1"
    )


def test_the_table_puts_the_lowest_rates_first(tmp_path: Path) -> None:
    tallies = flaky.tally(reported(tmp_path, CASES, {**CASES, "fails": ""}))
    lines = flaky.table(tallies, tallies.tests)
    assert lines[0].split() == ["test", "passed/runs", "rate", "skipped"]
    assert [line.split() for line in lines[1:]] == [
        ["tests.integration.test_x::errors", "0/2", "0.0%", "0"],
        ["tests.integration.test_x::fails", "1/2", "50.0%", "0"],
        ["tests.integration.test_x::passes", "2/2", "100.0%", "0"],
        ["tests.integration.test_x::skips", "0/0", "-", "2"],
    ]


def test_every_repetition_counts_for_its_test(tmp_path: Path) -> None:
    cases = {"test_a[1-3]": "", "test_a[2-3]": CASES["fails"], "test_a[3-3]": ""}
    cases |= {f"test_b[stall-{n}-3]": "" for n in (1, 2, 3)}
    cases["test_c[1-2]"] = ""  # a parameter that only looks like a repetition of another count
    repeated = flaky.Run("repeat", junit(tmp_path / "repeat.xml", cases), 3, returncode=1)
    tallies = flaky.tally([repeated])
    assert tallies.tests == {
        "tests.integration.test_x::test_a": flaky.Tally(passed=2, failed=1),
        "tests.integration.test_x::test_b[stall]": flaky.Tally(passed=3),
        "tests.integration.test_x::test_c[1-2]": flaky.Tally(passed=1),
    }


# --- the verdict ------------------------------------------------------------------------------


def test_one_failure_in_many_runs_fails_the_session(tmp_path: Path) -> None:
    runs = reported(tmp_path, *[{"steady": "", "rare": ""}] * 9, {"steady": "", "rare": "<error/>"})
    tallies = flaky.tally(runs)
    assert flaky.problems(tallies) == ["tests.integration.test_x::rare failed 1 of 10 runs"]
    table = tmp_path / "pass-rates.txt"
    assert flaky.report_on(tallies, table) == 1
    assert "tests.integration.test_x::rare 9/10 90.0% 0" in " ".join(table.read_text().split())


def test_a_clean_sweep_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tallies = flaky.tally(reported(tmp_path, {"steady": ""}, {"steady": ""}))
    assert flaky.problems(tallies) == []
    assert flaky.report_on(tallies, tmp_path / "pass-rates.txt") == 0
    assert "1 of 1 tests passed every time they ran; overall 2 of 2" in capsys.readouterr().out


def test_a_run_without_a_whole_report_fails_the_session(tmp_path: Path) -> None:
    (ok,) = reported(tmp_path, {"steady": ""})
    runs = [
        flaky.Run("crashed", tmp_path / "missing.xml", 0, returncode=3),
        flaky.Run("hung", ok.report, 0, returncode=None),
        flaky.Run("usage", ok.report, 0, returncode=4),
        flaky.Run("silent", ok.report, 0, returncode=1),
    ]
    problems = flaky.problems(flaky.tally(runs))
    assert problems[0].startswith("crashed: no readable report (")
    assert problems[1:] == [
        "crashed: pytest exited 3",
        f"hung: timed out after {flaky.RUN_LIMIT_S} s",
        "usage: pytest exited 4",
        "silent: pytest exited 1, no test failed",
    ]


def test_the_options_are_checked() -> None:
    args = flaky.parse_args(["--report-dir", "out", "--runs", "3", "--repeat", "0"])
    assert (args.runs, args.repeat, args.report_dir) == (3, 0, Path("out"))
    with pytest.raises(SystemExit):
        flaky.parse_args(["--report-dir", "out", "--runs", "0"])


# --- the burners ------------------------------------------------------------------------------


def test_burners_run_at_our_priority_until_the_block_ends() -> None:
    with flaky.burners(2, limit_s=600) as burners:
        pids = [burner.pid for burner in burners]
        assert len(set(pids)) == 2
        assert set(pids) <= Stock.taken().children
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [ours, ours]
        poll(lambda: all(cpu_ticks(pid) > 0 for pid in pids), "the burners used no CPU")
        assert all(burner.poll() is None for burner in burners)
    assert [burner.returncode for burner in burners] == [-signal.SIGTERM] * 2
    assert not set(pids) & Stock.taken().children


def test_a_burner_stops_on_its_own_after_its_limit() -> None:
    with flaky.burners(1, limit_s=0.1) as (burner,):
        poll(lambda: burner.poll() is not None, "the burner did not stop after its limit")
    assert burner.returncode == 0


def test_burners_stop_when_their_parent_dies() -> None:
    """A parent killed without a chance to clean up leaves no burner running."""
    starter = "\n".join(
        [
            "import sys",
            "from ci import flaky",
            "with flaky.burners(2, limit_s=600) as burners:",
            "    print(*(burner.pid for burner in burners), flush=True)",
            "    sys.stdin.read()",
        ]
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", starter],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2
        assert not any(gone(pid) for pid in pids)
    finally:
        parent.kill()
        parent.communicate()
    poll(lambda: all(gone(pid) for pid in pids), "the burners outlived their parent")
