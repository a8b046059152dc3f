"""DevStream: a local-first task and memory system for AI-assisted development.

The public names load on first use (PEP 562): `import devstream`, which every `devstream`
command does, loads the storage stack only once `DevStream` itself is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devstream.exports import lazy

if TYPE_CHECKING:
    from devstream.app import DevStream
    from devstream.config import Settings, load_settings
    from devstream.errors import DevStreamError

__all__ = ["DevStream", "DevStreamError", "Settings", "load_settings"]

_HOMES = {
    "devstream.app": ("DevStream",),
    "devstream.errors": ("DevStreamError",),
    "devstream.config": ("Settings", "load_settings"),
}

if not TYPE_CHECKING:  # type checkers would otherwise accept any attribute through it
    __getattr__, __dir__ = lazy(__name__, _HOMES)
