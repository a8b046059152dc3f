"""Suite-wide settings: which event loop runs the async tests, which backend stores, and
Hypothesis's profile.

`--loop` (or DEVSTREAM_TEST_LOOP, which nox sets) picks the loop through pytest-asyncio's
loop-factory hook. The default is uvloop where it is installed; a loop that was asked for
but cannot be had is a usage error, never a silent fallback to another loop.

`--backend` (or DEVSTREAM_TEST_BACKEND) picks the store the integration suite runs on:
sqlite (the default) or postgresql (see tests/postgres.py). A test marked
`sqlite_only(reason)` is skipped on PostgreSQL with its reason, `postgresql_only(reason)` on
SQLite.

Hypothesis runs the "dev" profile, or "ci" (more examples) when the CI variable is set.
Neither has a deadline, so no test depends on the machine's speed, and a failure prints
the blob that reproduces it (`@reproduce_failure`). nox passes each session one printed
`--hypothesis-seed` (HYPOTHESIS_SEED=<seed> reruns it).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Callable, Mapping

import pytest
from hypothesis import settings

pytest_plugins = ["pytester", "devstream.testing.fixtures", "tests.leaks"]

LOOP_ENV = "DEVSTREAM_TEST_LOOP"
LOOPS = ("asyncio", "uvloop")
BACKEND_ENV = "DEVSTREAM_TEST_BACKEND"
BACKENDS = ("sqlite", "postgresql")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
_LOOP_KEY = pytest.StashKey[tuple[str, LoopFactory]]()  # the loop this run uses
_BACKEND_KEY = pytest.StashKey[str]()

settings.register_profile(
    "dev", max_examples=100, deadline=None, derandomize=False, print_blob=True
)
settings.register_profile("ci", settings.get_profile("dev"), max_examples=200)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def default_loop() -> str:
    return os.environ.get(LOOP_ENV) or (
        "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    )


def loop_factory(name: str) -> LoopFactory:
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop  # noqa: PLC0415 - optional, imported only when asked for
    except ImportError as exc:
        raise pytest.UsageError(
            f"--loop={name} was requested but uvloop is not installed "
            "(pip install 'devstream[uvloop]')"
        ) from exc
    return uvloop.new_event_loop


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--loop",
        default=None,
        help=f"event loop for async tests: {' or '.join(LOOPS)} "
        f"(default: ${LOOP_ENV}, else uvloop where installed)",
    )
    parser.addoption(
        "--backend",
        default=None,
        help=f"store for integration tests: {' or '.join(BACKENDS)} "
        f"(default: ${BACKEND_ENV}, else sqlite)",
    )


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--loop") or default_loop()
    if name not in LOOPS:
        raise pytest.UsageError(f"unknown --loop {name!r}; choose one of {', '.join(LOOPS)}")
    config.stash[_LOOP_KEY] = (name, loop_factory(name))
    backend = config.getoption("--backend") or os.environ.get(BACKEND_ENV) or "sqlite"
    if backend not in BACKENDS:
        raise pytest.UsageError(
            f"unknown --backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    config.stash[_BACKEND_KEY] = backend


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of what only one backend has are skipped on the other, saying what it is."""
    backend = requested_backend(config)
    for item in items:
        for other in ("sqlite", "postgresql"):
            marker = item.get_closest_marker(f"{other}_only")
            if marker is None or other == backend:
                continue
            if not marker.args:
                raise pytest.UsageError(f"{item.nodeid}: {other}_only needs a reason")
            label = "SQLite" if other == "sqlite" else "PostgreSQL"
            item.add_marker(pytest.mark.skip(reason=f"{label} only: {marker.args[0]}"))


def requested_backend(config: pytest.Config) -> str:
    return config.stash[_BACKEND_KEY]


def requested_loop(config: pytest.Config) -> str:
    return config.stash[_LOOP_KEY][0]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    name, factory = config.stash[_LOOP_KEY]
    return {name: factory}


def pytest_report_header(config: pytest.Config) -> str:
    return f"devstream event loop: {requested_loop(config)}, backend: {requested_backend(config)}"
