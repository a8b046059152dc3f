"""The suite's loop selection: explicit, never a silent fallback."""

from __future__ import annotations

import sys

import pytest

from tests import conftest
from tests.support import repo_pythonpath


def test_default_loop_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(conftest.LOOP_ENV, "asyncio")
    assert conftest.default_loop() == "asyncio"


def test_asyncio_factory_is_the_standard_loop() -> None:
    loop = conftest.loop_factory("asyncio")()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()


def test_missing_uvloop_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import now fails
    with pytest.raises(pytest.UsageError, match="uvloop is not installed"):
        conftest.loop_factory("uvloop")


def test_unknown_loop_stops_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", repo_pythonpath())
    pytester.makepyfile(test_x="def test_x():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess(
        "-p", "tests.conftest", "--loop=trio", "-p", "no:randomly"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown --loop 'trio'*"])


def test_uvloop_factory_when_installed() -> None:
    pytest.importorskip("uvloop", reason="the uvloop extra is not installed here")
    loop = conftest.loop_factory("uvloop")()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
