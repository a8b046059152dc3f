"""pytest fixtures for a fake Ollama. Enable them in a conftest.py:

    pytest_plugins = ["devstream.testing.fixtures"]

`fake_ollama` is a fresh, healthy server for each test, free to switch to any failure.
`fake_ollama_server` is one server for the whole session, cheaper when many tests only need
embeddings; a test that switches or counts on it should call `reset()` first and last.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstream.testing.ollama import FakeOllama


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A started FakeOllama on a free loopback port, stopped after the test."""
    with FakeOllama() as server:
        yield server


@pytest.fixture(scope="session")
def fake_ollama_server() -> Iterator[FakeOllama]:
    """A started FakeOllama shared by every test of the session."""
    with FakeOllama() as server:
        yield server
