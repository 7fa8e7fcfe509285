"""Packages whose public names are imported on first use, not with the package.

Why: importing a package runs its ``__init__``, and several of herder's packages hold both
something that must start in milliseconds (a session's host process, ``herder --version``)
and something heavy (FastAPI, SQLAlchemy). A package built with :func:`lazy_exports` lists
its API in ``__all__`` (what other packages may import, ``tests/test_layering.py`` checks
it) and imports each name from its home module the first time it is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` that finds each name in its home.

    Args:
        package: the package's ``__name__``.
        homes: exported name → home module, relative to ``package`` (``"server"``) or
            ``"module:attribute"`` when the exported name differs from the home's.

    Raises (from the returned function):
        AttributeError: the name is not exported, as Python expects of ``__getattr__``.
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = home.partition(":")
        value = getattr(importlib.import_module(f"{package}.{module}"), attribute or name)
        return value

    return __getattr__
