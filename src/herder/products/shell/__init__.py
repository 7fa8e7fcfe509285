"""The ``shell`` product: files (``fs``) and processes (``proc``) in a session's directory.

The agent finds the two extensions through their entry points (``shell.fs``, ``shell.proc``);
the names are imported on first use, so that loading one does not load the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:
    from herder.products.shell.fs import Fs
    from herder.products.shell.proc import Proc

_HOMES = {"Fs": "fs", "Proc": "proc"}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = ["Fs", "Proc"]
