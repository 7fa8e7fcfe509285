"""Running a command's main coroutine: on uvloop where it is installed, as the daemons do."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion on uvloop, or asyncio's loop where uvloop is missing."""
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux
        asyncio.run(main)
        return
    uvloop.run(main)
