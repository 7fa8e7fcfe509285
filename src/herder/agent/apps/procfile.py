"""Procfile parsing: ``<process type>: <command>`` per line.

Blank lines and lines starting with ``#`` are ignored. A process type is letters,
digits, ``_`` and ``-``. Anything else is an error that names the line, because a
Procfile silently half-read would start the wrong thing.
"""

from __future__ import annotations

import re
from pathlib import Path

from herder.agent.errors import ProcfileError

PROCESS_TYPE_PATTERN = r"[A-Za-z0-9_-]{1,64}"
_LINE = re.compile(rf"^(?P<type>{PROCESS_TYPE_PATTERN})\s*:\s*(?P<command>.*?)\s*$")
# A Procfile is a few lines; anything bigger is not a Procfile.
MAX_PROCFILE_BYTES = 64 * 1024


def parse_procfile(text: str) -> dict[str, str]:
    """Return the process types and their commands.

    Raises:
        ProcfileError: a line is neither blank, a comment nor ``type: command``; a type
            appears twice; a command is empty.
    """
    commands: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ProcfileError(f"Procfile line {number} is not '<process type>: <command>': {raw[:80]!r}")
        ptype, command = match["type"], match["command"]
        if not command:
            raise ProcfileError(f"Procfile line {number}: process type {ptype!r} has no command")
        if ptype in commands:
            raise ProcfileError(f"Procfile line {number}: process type {ptype!r} appears twice")
        commands[ptype] = command
    return commands


def find_app_root(directory: Path) -> Path:
    """The folder holding the Procfile: ``directory`` or its single top-level folder.

    Raises:
        ProcfileError: no Procfile in either place.
    """
    if (directory / "Procfile").is_file():
        return directory
    entries = [p for p in directory.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / "Procfile").is_file():
        return entries[0]
    raise ProcfileError("no Procfile at the root of the app (nor inside its single top-level folder)")


def read_command(app_root: Path, process_type: str) -> str:
    """The command for ``process_type`` in ``app_root/Procfile``.

    Raises:
        ProcfileError: unreadable, too big, malformed, or no such process type.
    """
    path = app_root / "Procfile"
    if path.is_symlink() or not path.is_file():
        raise ProcfileError("the Procfile is not a regular file")
    if path.stat().st_size > MAX_PROCFILE_BYTES:
        raise ProcfileError(f"the Procfile is larger than {MAX_PROCFILE_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not line 1's text
    except UnicodeDecodeError as exc:
        raise ProcfileError(f"the Procfile is not UTF-8 text: {exc.reason}") from exc
    commands = parse_procfile(text)
    if process_type not in commands:
        known = ", ".join(sorted(commands)) or "none"
        raise ProcfileError(f"unknown process type {process_type!r}; the Procfile defines: {known}")
    return commands[process_type]
