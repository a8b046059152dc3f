"""Names a package offers but loads on first use (PEP 562), so that importing the package
costs nothing until one of them is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping


def lazy(
    package: str, homes: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose names live in the modules `homes`
    maps to them (module -> names). Each name is imported once, then kept as a global."""
    home_of = {name: module for module, names in homes.items() for name in names}
    namespace = importlib.import_module(package).__dict__

    def getattr_(name: str) -> object:
        home = home_of.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value  # later lookups skip this hook
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *home_of})

    return getattr_, dir_
