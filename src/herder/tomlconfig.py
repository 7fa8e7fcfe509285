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


# pydantic's words for a key nobody defines: a typo, most often.
_UNKNOWN_KEY = "extra_forbidden"
# The longest rendering of a wrong value shown back (a whole table would flood the line).
_MAX_VALUE_CHARS = 60


def config_problems(exc: Exception, path: Path | None, overrides: dict[str, Any]) -> list[str]:
    """One readable line per problem in a daemon's settings, naming the key and where it
    was set: ``agent.toml: supervision.grace_s: must be >= 0 (got -1)``.

    ``exc`` is what reading and validating raised: a pydantic ``ValidationError`` (one
    line per error, without pydantic's type codes and links), a ``tomllib.TOMLDecodeError``
    (the file and the parser's line and column), an ``OSError`` (the file and why), or any
    other ``ValueError`` (its text). A key given by an option is said to come from the
    command line.
    """
    where = str(path) if path is not None else "the command line"
    if isinstance(exc, OSError):
        return [f"cannot read {where}: {exc.strerror or exc}"]
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        import tomllib

        if isinstance(exc, tomllib.TOMLDecodeError):
            return [f"{where}: not valid TOML: {exc}"]
        return [f"{where}: {exc}"]
    return [_problem(error, path, overrides) for error in errors()]


def _problem(error: Any, path: Path | None, overrides: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) or "(the settings)"
    source = "the command line" if _overridden(loc, overrides) or path is None else str(path)
    if error["type"] == _UNKNOWN_KEY:
        return f"{source}: {key}: unknown key (a typo? docs/operations.md lists the settings)"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    value = error.get("input")
    if not isinstance(value, dict | list) and "input" in error:
        shown = repr(value)
        if len(shown) > _MAX_VALUE_CHARS:
            shown = shown[: _MAX_VALUE_CHARS - 3] + "..."
        message += f" (got {shown})"
    return f"{source}: {key}: {message}"


def _overridden(loc: list[str], overrides: dict[str, Any]) -> bool:
    """True when the option-given ``overrides`` set the key at ``loc`` (or its table)."""
    node: Any = overrides
    for part in loc:
        if not isinstance(node, dict) or node.get(part) is None:
            return False
        node = node[part]
        if not isinstance(node, dict):
            return True
    return True
