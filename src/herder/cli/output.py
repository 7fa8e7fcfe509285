"""How the CLI prints: JSON documents, tables, and figures made readable.

Typer-free on purpose: the quick commands (``herder.cli.quick``) print through here
without importing typer.
"""

from __future__ import annotations

import json
import sys
import time

# Names for the type checker only: importing typing and pathlib took ~12 ms of a quick command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def print_json(doc: Any) -> None:
    """The whole document, indented, keys sorted (what ``--json`` prints)."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def table(headers: list[str], rows: list[list[Any]]) -> None:
    """Columns as wide as their widest cell, two spaces apart; ``None`` or ``""`` shows as ``-``."""
    cells = [headers] + [["-" if c is None or c == "" else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    sys.stdout.write(
        "".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in cells
        )
    )


def duration(seconds: float | None) -> str:
    """``42s``, ``7m``, ``3h``, ``12d`` (whole units, rounded down); ``-`` for None."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def age(since: float | None, now: float | None = None) -> str:
    """How long ago ``since`` (epoch seconds) was, as ``duration`` says it."""
    if since is None:
        return "-"
    return duration((time.time() if now is None else now) - since)


def size(count: float | None) -> str:
    """Bytes as ``812K``, ``45.3M``, ``1.2G`` (powers of 1024); ``-`` for None."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            break
        value /= 1024
    if unit == "B":
        return f"{int(value)}B"
    return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"


def percent(value: float | None) -> str:
    """``3.2%``; ``-`` for None."""
    return "-" if value is None else f"{value:.1f}%"


__all__ = ["age", "duration", "percent", "print_json", "size", "table"]
