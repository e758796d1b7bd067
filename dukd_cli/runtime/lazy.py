"""A package's public face, loaded on first use (PEP 562).

``__getattr__, __dir__, __all__ = lazy_face(__name__, {"name": ".module", ...})`` in a package's
``__init__`` makes ``from package import name`` import ``package.module`` only when asked, so that
importing a light submodule of the package (or running ``dukd --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_face(
    package: str, public: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``: each public name from its module."""
    names = dict(public)

    def getattr_(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        import sys

        return sorted(set(vars(sys.modules[package])) | set(names))

    return getattr_, dir_, sorted(names)
