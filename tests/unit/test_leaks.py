"""The session's clean-up check (tests/leaks.py) names what a session leaves behind."""

from __future__ import annotations

import pytest

from tests.support import repo_pythonpath

# The child ends by itself a few seconds after the inner session has reported it.
LEAKY = """
import socket, subprocess, sys, tempfile, threading

kept = []

def test_leaves_everything_behind():
    stop = threading.Event()
    threading.Thread(target=stop.wait, name="leaky-thread", daemon=True).start()
    kept.append(stop)
    kept.append(socket.socket())
    kept.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"]))
    tempfile.mkstemp(prefix="leaky-file")
"""

CLEAN = """
import socket, subprocess, sys, tempfile, threading

def test_cleans_up():
    thread = threading.Thread(target=lambda: None, name="joined")
    thread.start()
    thread.join()
    with socket.socket():
        pass
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    with tempfile.TemporaryDirectory():
        pass
"""


@pytest.fixture
def leak_checked(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytest project whose sessions run the clean-up check, in a process of their own."""
    monkeypatch.setenv("PYTHONPATH", repo_pythonpath())
    pytester.makeconftest('pytest_plugins = ["tests.leaks"]')
    pytester.makeini("[pytest]\naddopts = -p no:randomly -p no:cacheprovider\n")
    return pytester


def test_a_session_that_leaves_things_behind_fails_naming_them(
    leak_checked: pytest.Pytester,
) -> None:
    leak_checked.makepyfile(test_leaky=LEAKY)
    result = leak_checked.runpytest_subprocess()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*the test session left behind:*",
            "*thread 'leaky-thread'*",
            "*open socket:[[]*",
            "*child process * (*time.sleep(5))*",
            "*temporary file *leaky-file*",
        ]
    )


def test_a_session_that_cleans_up_passes(leak_checked: pytest.Pytester) -> None:
    leak_checked.makepyfile(test_clean=CLEAN)
    leak_checked.runpytest_subprocess().assert_outcomes(passed=1)
