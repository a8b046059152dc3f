"""Run one command and write its wall time and peak RSS as JSON, for the process benchmarks.

Run as `python measure_process.py REPORT TIMEOUT_S [--stdin FILE] COMMAND...`. The command
inherits this process's environment, stdout and stderr, and reads FILE on stdin (nothing
without it); its own `ru_maxrss` comes from `os.wait4`, and it is killed (and the report
says so) if it runs longer than TIMEOUT_S.

Why a process of its own: on Linux a child's `ru_maxrss` starts at the high-water RSS of
the memory it was forked or vforked from, carried over its exec. Measured straight from the
benchmark process (hundreds of MB once a corpus has been built) every child would look as
big as pytest; started from this small process, it looks only as big as itself or this.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import BinaryIO


def _high_water_kib() -> int | None:
    """This process's own peak RSS (its `ru_maxrss` is inherited from pytest's; see above)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def main() -> None:
    report, timeout_s, command = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    stdin = Path(os.devnull)
    if command[0] == "--stdin":
        stdin, command = Path(command[1]), command[2:]
    with stdin.open("rb") as fed:
        figures = _measured(command, fed, timeout_s)
    report.write_text(json.dumps(figures), encoding="utf-8")


def _measured(command: list[str], stdin: BinaryIO, timeout_s: float) -> dict[str, object]:
    timed_out = False
    started = time.perf_counter()
    child = subprocess.Popen(command, stdin=stdin)

    def kill(signum: int, frame: FrameType | None) -> None:
        nonlocal timed_out
        timed_out = True
        child.kill()

    signal.signal(signal.SIGALRM, kill)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    _, status, usage = os.wait4(child.pid, 0)
    wall_s = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    signal.setitimer(signal.ITIMER_REAL, 0)
    return {
        "wall_s": wall_s,
        "maxrss_kib": usage.ru_maxrss,  # KiB on Linux
        "returncode": child.returncode,
        "timed_out": timed_out,
        "launcher_hwm_kib": _high_water_kib(),
    }


if __name__ == "__main__":
    main()
