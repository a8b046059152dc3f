"""Session hooks for assistants (Claude Code, Codex): `devstream hook EVENT`, `prime`.

The names load on first use: a hook that has nothing to keep never loads the storage stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devstream.exports import lazy

if TYPE_CHECKING:
    from devstream.hooks.brief import brief as brief
    from devstream.hooks.run import capture_kinds as capture_kinds
    from devstream.hooks.run import handle as handle

_HOMES = {"devstream.hooks.brief": ("brief",), "devstream.hooks.run": ("capture_kinds", "handle")}

if not TYPE_CHECKING:  # type checkers would otherwise accept any attribute through it
    __getattr__, __dir__ = lazy(__name__, _HOMES)
