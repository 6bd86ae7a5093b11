"""One lazy face for the package and its subpackages (PEP 562).

A face lists ``public name -> defining module``; a name is imported from its module the
first time it is looked up and then cached in the face's namespace, so importing a face
costs nothing until a name is used (``import trim_pomdp`` must not load Numba, SciPy,
matplotlib or an HTTP client).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    face: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the module ``face`` exporting ``exports`` lazily."""
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {face!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        # cache: the next lookup is a plain attribute access
        setattr(sys.modules[face], name, value)
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__
