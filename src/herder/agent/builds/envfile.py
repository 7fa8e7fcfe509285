"""An app's ``.env`` file, read as honcho and foreman read it.

``KEY=VALUE`` lines; blank lines and ``#`` comments skipped; an optional ``export ``
prefix; values in single quotes taken literally, in double quotes with ``\\n``, ``\\"``
and ``\\\\`` unescaped; an unquoted value ends at `` #``. Lines that are none of these
are ignored, as honcho does, rather than failing the app.
"""

from __future__ import annotations

import re
from pathlib import Path

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def parse_env(text: str) -> dict[str, str]:
    """The variables of a ``.env`` text, later lines winning."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        key, value = match.groups()
        env[key] = _value(value)
    return env


def _value(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), raw[1:-1])
    comment = raw.find(" #")
    return (raw[:comment] if comment >= 0 else raw).rstrip()


def read_env_file(app_root: Path) -> dict[str, str]:
    """``app_root/.env``'s variables, or none if there is no such file."""
    try:
        text = (app_root / ".env").read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return {}
    return parse_env(text)
