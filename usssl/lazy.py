"""Lazy package exports: ``from usssl.data import Cache`` without importing every module of
``usssl.data`` (and torch with them) when the package is imported.

    >>> __getattr__, __all__ = lazy_exports(__name__, {"Cache": "usssl.data.cache"})
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """(a module ``__getattr__``, ``__all__``) for ``exports``: exported name -> defining module."""

    def getattr_(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return getattr_, sorted(exports)
