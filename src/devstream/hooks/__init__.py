"""Session hooks for assistants (Claude Code, Codex): `devstream hook EVENT`, `prime`."""

from devstream.hooks.brief import brief
from devstream.hooks.run import capture_kinds, handle

__all__ = ["brief", "capture_kinds", "handle"]
