"""Package exports imported on first use (PEP 562), so that building the command line's
parser (``segdecay --help``, an option error) loads no torch, smp, timm or Optuna: those
take seconds to import, and a parser needs none of them."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, list[str]]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps each module to the
    names the package exports from it, and a name's module is imported when it is first
    read (then kept, so the next read is a plain attribute)."""
    home = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> object:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(home))

    return __getattr__, __dir__
