"""The ``herder`` command.

Two front ends share the work. The commands an operator types all day (``ps``,
``status``, ``logs``, ``rm``, ``restart``, ``stop``, ``start``, ``tasks ls``, ``tasks
submit``, ``workers ls``) first go through ``quick``: a parser of the standard library's
weight that runs them without importing typer, whose start (its import, and a pydantic
adapter per parameter) cost about 200 ms of every command. Anything else, and anything
``quick`` is unsure of (``--help``, a bad value, completion), goes to the typer command
tree in ``tree``, which defines every command, its help and its errors.

Importing this package imports neither typer nor a command module; the names of
``tree`` (``build_app``, ``COMMAND_MODULES``, ``app``...) are reachable from here too.
"""

from __future__ import annotations

import sys

# Names for the type checker only: importing typing and pathlib took ~12 ms of a quick command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def main() -> None:
    """Entry point of the ``herder`` console script."""
    from herder.cli.quick import run_quick

    if run_quick(sys.argv[1:]):
        return
    from herder.cli.tree import main as run_tree

    run_tree()


# The typer tree's names reachable from here (``herder.cli.app`` and what tests use).
_TREE_NAMES = frozenset({"app", "build_app", "main_options", "COMMAND_MODULES", "_command_of", "_names_of"})


def __getattr__(name: str) -> Any:
    """The typer tree's names, imported on first use; anything else is no attribute (a
    submodule not imported yet included: the import system then imports it)."""
    if name not in _TREE_NAMES:
        raise AttributeError(f"module 'herder.cli' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module("herder.cli.tree"), name)


__all__ = ["main"]
