"""Test tooling for DevStream and for the tests of projects that use it.

- `FakeOllama`: an Ollama embed server on loopback with failures to switch on: refused
  connections, stalls, error statuses, rate limits, bodies that are not JSON, vectors of the
  wrong length.
- `deterministic_embedding`: the vectors it serves, computable in the test for comparison.
- `devstream.testing.fixtures`: pytest fixtures; enable them with
  `pytest_plugins = ["devstream.testing.fixtures"]`.
- `python -m devstream.testing`: the fake server in the foreground, for trying things by hand.

Nothing here imports pytest, so the package works without it.
"""

from devstream.testing.ollama import FakeOllama
from devstream.testing.vectors import deterministic_embedding

__all__ = ["FakeOllama", "deterministic_embedding"]
