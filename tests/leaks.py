"""The suite cleans up after itself: what a session started is gone when it ends.

At the start of a session (each xdist worker runs one) this takes stock of the process's
threads, open sockets and child processes, and points temporary files at a folder of the
session's own. At the end, after every other fixture has been torn down, anything new that
is still there fails the run, named: a thread, a socket (with its peer), a child process, a
file left in the temporary folder, or a database file beside the repository. pytest's own
`tmp_path` folders are its business (`tmp_path_retention_policy` keeps only failed tests').
Sockets and child processes are read from Linux's /proc; elsewhere only threads and files
are checked.
"""

from __future__ import annotations

import gc
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Threads that live as long as the process by design: the vector scan's pool.
LIFELONG_THREADS = ("devstream-scan",)
_PROC = Path("/proc")
# The system's temporary folder, as it was before any session pointed TMPDIR at its own: for
# what outlives a session on purpose (the PostgreSQL server the xdist workers share).
SYSTEM_TMP = Path(tempfile.gettempdir())
_REPO = Path(__file__).resolve().parents[1]
_DATABASE_FILES = ("*.db", "*.db-index", "*.db-wal", "*.db-shm")


@dataclass(frozen=True)
class Stock:
    threads: dict[int, str]  # ident -> name
    sockets: frozenset[str]  # "socket:[inode]"
    children: frozenset[int]
    databases: frozenset[Path]

    @classmethod
    def taken(cls) -> Stock:
        threads = {t.ident or 0: t.name for t in threading.enumerate() if t.is_alive()}
        return cls(threads, _sockets(), _children(), _databases())

    def left_since(self, before: Stock) -> list[str]:
        """What is here now and was not before, described."""
        threads = [
            f"thread {name!r}"
            for ident, name in self.threads.items()
            if ident not in before.threads and not name.startswith(LIFELONG_THREADS)
        ]
        sockets = [f"open {s}" for s in sorted(self.sockets - before.sockets)]
        children = [f"child process {pid} ({_command(pid)})" for pid in self.children]
        files = [f"database file {p}" for p in sorted(self.databases - before.databases)]
        return threads + sockets + children + files


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Set up before, and torn down after, every other session fixture."""
    before = Stock.taken()
    folder = tmp_path_factory.mktemp("tmp")
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(folder), str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
    gc.collect()  # what only a finalizer would close is a leak too: it is gone by now
    left = Stock.taken().left_since(before)
    left += [f"temporary file {path}" for path in sorted(folder.rglob("*"))]
    if left:
        pytest.fail("the test session left behind:\n  " + "\n  ".join(left), pytrace=False)


def _sockets() -> frozenset[str]:
    fds = _PROC / "self" / "fd"
    if not fds.is_dir():
        return frozenset()
    found = set()
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:"):
            found.add(target)
    return frozenset(found)


def _children() -> frozenset[int]:
    """Child processes, zombies included (a child nobody waited for is a leak too)."""
    tasks = _PROC / "self" / "task"
    if not tasks.is_dir():
        return frozenset()
    pids: set[int] = set()
    for task in tasks.iterdir():
        try:
            listed = (task / "children").read_text()
        except OSError:
            continue
        pids.update(int(pid) for pid in listed.split())
    return frozenset(pids)


def _command(pid: int) -> str:
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "gone"


def _databases() -> frozenset[Path]:
    return frozenset(path for pattern in _DATABASE_FILES for path in _REPO.glob(pattern))
