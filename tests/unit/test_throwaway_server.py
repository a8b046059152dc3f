"""What a test run killed outright leaves of its throwaway PostgreSQL, the next run removes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import SETTLED_S, sweep_abandoned
from tests.support import PROCESS_WAIT_S

# Waits for Ctrl-C as a server waits for its fast shutdown, whatever its parent ignored.
_SERVER = (
    "import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "print('up', flush=True); time.sleep(600)"
)


def _exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(PROCESS_WAIT_S)
    return process.pid


def _server_folder(parent: Path, name: str, users: list[int], *, age_s: float = 600) -> Path:
    """A server's folder whose list of users last changed `age_s` ago."""
    folder = parent / f"devstream-pg-{name}"
    folder.mkdir()
    listed = folder / ".handle_pids.json"
    listed.write_text(json.dumps(users))
    then = time.time() - age_s
    os.utime(listed, (then, then))
    return folder


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at its end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        with process:  # closes its pipe once it has exited
            process.kill()
            process.wait(PROCESS_WAIT_S)


def _start_server(cwd: Path, running: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    running.append(process)
    assert process.stdout is not None
    assert process.stdout.readline() == "up\n", "the stand-in server did not start"
    return process


def test_only_folders_whose_every_user_exited_are_removed(tmp_path: Path) -> None:
    dead = _exited_pid()
    abandoned = _server_folder(tmp_path, "abandoned", [dead, dead])
    in_use = _server_folder(tmp_path, "in-use", [dead, os.getpid()])
    ours = _server_folder(tmp_path, "ours", [dead])
    starting = tmp_path / "devstream-pg-starting"  # the package has not listed a user yet
    starting.mkdir()
    garbled = _server_folder(tmp_path, "garbled", [])
    (garbled / ".handle_pids.json").write_text("[12")  # half written
    os.utime(garbled / ".handle_pids.json", (time.time() - 600,) * 2)
    # Its last user is cleaning up right now, and will remove it itself.
    closing = _server_folder(tmp_path, "closing", [], age_s=SETTLED_S / 2)

    assert sweep_abandoned(tmp_path, keep=ours) == [abandoned]
    assert not abandoned.exists()
    assert all(folder.is_dir() for folder in (in_use, ours, starting, garbled, closing))


def test_a_server_left_running_is_stopped_before_its_folder_goes(
    tmp_path: Path, running: list[subprocess.Popen[str]]
) -> None:
    folder = _server_folder(tmp_path, "abandoned", [_exited_pid()])
    server = _start_server(folder, running)
    (folder / "postmaster.pid").write_text(f"{server.pid}\n{folder}\n")

    assert sweep_abandoned(tmp_path, keep=tmp_path / "none") == [folder]
    assert server.poll() is not None, "the server still runs after the sweep"
    assert not folder.exists()


def test_a_pid_file_naming_another_process_signals_nothing(
    tmp_path: Path, running: list[subprocess.Popen[str]]
) -> None:
    folder = _server_folder(tmp_path, "abandoned", [_exited_pid()])
    elsewhere = _start_server(tmp_path, running)  # its pid, reused: it runs in another folder
    (folder / "postmaster.pid").write_text(f"{elsewhere.pid}\n{folder}\n")

    assert sweep_abandoned(tmp_path, keep=tmp_path / "none") == [folder]
    assert elsewhere.poll() is None, "a process the pid file did not mean was signalled"
    assert not folder.exists()
