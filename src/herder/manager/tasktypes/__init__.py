"""Task types: compilers turn a task's settings into work, parsers turn its output into progress.

The Manager API seed's ``POST /tasks`` names a compiler (``type``) and a parser
(``parser``) by name and hands the compiler its ``settings``; this package is the
contract between the manager and those two kinds of plugin, and where they are found.
Both are entry points, so a third party adds a task type by installing a package::

    [project.entry-points."herder.compilers"]
    command = "herder.manager.tasktypes.compilers:CommandCompiler"
    frames = "herder.manager.tasktypes.compilers:FramesCompiler"

    [project.entry-points."herder.parsers"]
    frames = "herder.manager.tasktypes.parsers:FramesParser"
    percent = "herder.manager.tasktypes.parsers:PercentParser"
    none = "herder.manager.tasktypes.parsers:NoneParser"

Everything here is pure: no I/O, no database, no clock. A compiler is called once when a
task is submitted; what it returns (one ``WorkItem`` per piece of work) is what the
manager stores and hands to workers, so every mistake in the settings is refused here,
at submission, with the settings key it concerns (``TaskTypeError.field``), rather than
on a worker later. A parser is fed a work item's output one line at a time.

This module imports neither ``compilers`` nor ``parsers``: they are loaded through their
entry points like any third-party plugin, so the built-in ones get no special path.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol, runtime_checkable

from herder.manager.errors import TaskTypeError

COMPILERS_GROUP = "herder.compilers"
PARSERS_GROUP = "herder.parsers"


@dataclasses.dataclass(frozen=True, slots=True)
class WorkItem:
    """One piece of work a worker runs: a program, its environment and directory.

    ``argv`` is always an argv, never a shell string: a shell command is compiled to
    ``["/bin/sh", "-c", text]`` so that workers have one way to start things and never
    guess at quoting. ``frame_start``/``frame_end`` are the frames this item covers
    (``None`` for work without frames); ``label`` is a short human description for
    listings (``"frames 1-10"``).
    """

    argv: list[str]
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    cwd: str | None = None
    frame_start: int | None = None
    frame_end: int | None = None
    label: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Compiled:
    """What a compiler makes of a task's settings: its work items and the task's own fields.

    ``items`` holds at least one item, in the order they should run. ``frame_start`` and
    ``frame_end`` are the whole task's range, for the seed's task document (``None`` for
    tasks without frames); ``format`` is the seed's ``format`` field, taken from
    ``settings["format"]`` (``""`` when absent).
    """

    items: list[WorkItem]
    frame_start: int | None
    frame_end: int | None
    format: str


@runtime_checkable
class Compiler(Protocol):
    """A task type: turns settings into work items (entry point group ``herder.compilers``).

    Compilers must be pure and deterministic: the manager may compile again (to show a
    task, or after a restart) and expects the same items. The manager compiles in a
    worker thread, so that a task of many items does not hold up its event loop; a
    compiler whose work is always small says so with a class attribute ``inline = True``
    and is called on the loop (a thread hop costs more than compiling one command).
    """

    name: str

    def compile(self, settings: dict[str, Any]) -> Compiled:
        """The work for ``settings``; raises ``TaskTypeError`` for settings it cannot use."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """What one output line says about progress: a frame number seen, a percentage, or both."""

    frame: int | None = None
    percent: float | None = None


@runtime_checkable
class Parser(Protocol):
    """Reads a work item's output line by line (entry point group ``herder.parsers``).

    A parser may keep state between lines (the built-in ones report a value only when it
    changes), so the manager uses one instance per work item: ``load_parser`` always
    returns a new one.
    """

    name: str

    def parse(self, line: str) -> Progress | None:
        """The progress ``line`` reports, or ``None`` when it says nothing new about it."""
        ...


def _json_kind(value: Any) -> str:
    """The JSON name of a value's type, for messages read by clients that speak JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def normalize_settings(value: Any) -> dict[str, Any]:
    """A task's settings as a dict: a dict as is, a string parsed as a JSON object.

    The seed types ``settings`` as a string (a JSON document inside the JSON request);
    clients that send an object are accepted too, so both reach a compiler the same way.
    Anything else, a string that is not strict JSON (``NaN`` included), or JSON that is
    not an object is refused with ``field="settings"``.
    """
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            # ValueError covers JSONDecodeError and integers too long to convert;
            # RecursionError is what deeply nested arrays give.
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise TaskTypeError("settings", f"not valid JSON: {reason}") from None
        if not isinstance(parsed, dict):
            raise TaskTypeError("settings", f"must be a JSON object, got {_json_kind(parsed)}")
        return parsed
    raise TaskTypeError(
        "settings", f"must be an object or a string holding a JSON object, got {_json_kind(value)}"
    )


@functools.cache
def _installed(group: str) -> dict[str, EntryPoint]:
    """The entry points of ``group`` by name, read once: ``entry_points()`` scans every
    installed distribution's metadata, far too slow for each submitted task."""
    return {point.name: point for point in entry_points(group=group)}


@functools.cache
def _factory(group: str, name: str) -> Any:
    """The object an entry point names, imported once (its module stays imported anyway)."""
    return _installed(group)[name].load()


def _clear_caches() -> None:
    """Forget what was read and loaded (for tests that install entry points of their own)."""
    _installed.cache_clear()
    _factory.cache_clear()


def _load(group: str, name: Any, field: str, what: str, protocol: type) -> Any:
    installed = _installed(group)
    if not isinstance(name, str) or name not in installed:
        names = ", ".join(sorted(installed)) or "(nothing)"
        shown = repr(name) if isinstance(name, str) else _json_kind(name)
        raise TaskTypeError(field, f"unknown {what} {shown}; installed: {names}")
    instance = _factory(group, name)()
    if not isinstance(instance, protocol):
        # A broken plugin is the installation's fault, not the client's: not a TaskTypeError.
        point = installed[name]
        raise TypeError(f"entry point {group}:{name} = {point.value} does not make a {what}")
    return instance


def load_compiler(name: str) -> Compiler:
    """A compiler for task type ``name`` (entry point group ``herder.compilers``).

    Raises:
        TaskTypeError: ``field="type"``, no such task type is installed; the message
            lists the installed ones.
        TypeError: the entry point does not make something with ``name`` and ``compile``.
    """
    compiler: Compiler = _load(COMPILERS_GROUP, name, "type", "task type", Compiler)
    return compiler


def load_parser(name: str) -> Parser:
    """A new parser ``name`` (entry point group ``herder.parsers``), one per work item.

    A new instance each call, because parsers keep state between the lines they read.

    Raises:
        TaskTypeError: ``field="parser"``, no such parser is installed.
        TypeError: the entry point does not make something with ``name`` and ``parse``.
    """
    parser: Parser = _load(PARSERS_GROUP, name, "parser", "parser", Parser)
    return parser


def compiler_names() -> list[str]:
    """The installed task types, sorted (for help texts and error messages)."""
    return sorted(_installed(COMPILERS_GROUP))


def parser_names() -> list[str]:
    """The installed parsers, sorted."""
    return sorted(_installed(PARSERS_GROUP))


__all__ = [
    "COMPILERS_GROUP",
    "PARSERS_GROUP",
    "Compiled",
    "Compiler",
    "Parser",
    "Progress",
    "TaskTypeError",
    "WorkItem",
    "compiler_names",
    "load_compiler",
    "load_parser",
    "normalize_settings",
    "parser_names",
]
