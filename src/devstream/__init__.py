"""DevStream: a local-first task and memory system for AI-assisted development.

The public names load on first use (PEP 562): `import devstream`, which every `devstream`
command does, loads the storage stack only once `DevStream` itself is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devstream.app import DevStream
    from devstream.config import Settings, load_settings
    from devstream.errors import DevStreamError

__all__ = ["DevStream", "DevStreamError", "Settings", "load_settings"]

_HOMES = {
    "DevStream": "devstream.app",
    "DevStreamError": "devstream.errors",
    "Settings": "devstream.config",
    "load_settings": "devstream.config",
}


if not TYPE_CHECKING:  # type checkers would otherwise accept any attribute through it

    def __getattr__(name: str) -> object:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value  # later lookups skip this hook
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
