"""Guards against silent drift: a test file no session runs on its own, and the driver
internals DevStream relies on moving in an aiosqlite release."""

from __future__ import annotations

import inspect
import sqlite3
import threading
from pathlib import Path

import aiosqlite
import noxfile

from devstream.db import sqlite
from tests.support import REPO_ROOT


def test_every_integration_test_file_is_a_category_of_the_matrix() -> None:
    found = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "tests" / "integration").glob("test_*.py")
    }
    assert found == set(noxfile.CATEGORIES.values())


async def test_the_aiosqlite_internals_the_driver_layer_uses_are_there() -> None:
    """`db/sqlite.py` queues work with `Connection._execute`, reads the stdlib connection
    from `_conn` and marks `_thread` a daemon; aiosqlite is bounded above for them."""
    assert inspect.iscoroutinefunction(aiosqlite.Connection._execute)
    connection = await sqlite.connect(Path(":memory:"))
    try:
        assert isinstance(connection._conn, sqlite3.Connection)
        assert isinstance(connection._thread, threading.Thread)
        assert connection._thread.daemon
        rows = await connection.in_thread(lambda conn: conn.execute("SELECT 1").fetchall())
        assert rows == [(1,)]
        assert connection.read_without_waiting("SELECT 2", ()) == [(2,)]
    finally:
        await connection.close()


def test_the_oldest_python_is_the_one_mypy_checks_and_the_package_requires() -> None:
    assert sorted(noxfile.PYTHONS, key=lambda v: tuple(map(int, v.split(".")))) == noxfile.PYTHONS
    assert noxfile.PYPROJECT["tool"]["mypy"]["python_version"] == noxfile.OLDEST
    assert noxfile.PYPROJECT["project"]["requires-python"] == f">={noxfile.OLDEST}"
