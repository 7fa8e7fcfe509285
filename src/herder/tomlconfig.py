"""One way to read a daemon's settings: a TOML file, then the command line over it.

The agent and the manager both take ``--config FILE`` and options that override single
keys of it. Options left out are ``None`` and change nothing, so a file's ``port`` is not
overwritten by an option's default; sections (tables) merge key by key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_with_overrides(path: Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The file's table (empty without a file) with ``overrides`` laid over it.

    Raises:
        OSError: the file cannot be read.
        tomllib.TOMLDecodeError: the file is not TOML.
    """
    data: dict[str, Any] = {}
    if path is not None:
        import tomllib  # only when there is a file: a daemon starts faster without it

        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    merge(data, {k: v for k, v in overrides.items() if v is not None})
    return data


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Overlay ``overrides`` on ``base`` in place; sections (dicts) merge key by key."""
    for key, value in overrides.items():
        current = base.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merge(current, value)
        else:
            base[key] = value
