"""Running a command's main coroutine: on uvloop where it is installed, as the daemons do."""

from __future__ import annotations

import asyncio
import gc
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


# Collect the youngest generation every 50,000 net allocations rather than 700: under
# load (a thousand beats a second) fewer short-lived objects survive into the older
# generations, so the full passes that stall the loop come far less often.
GC_THRESHOLDS = (50_000, 20, 100)


def settle_daemon() -> None:
    """Settle the interpreter for a long-running daemon, once it has started.

    Keep the garbage collector from scanning what start-up made, again and again.

    Modules, the web app, the database schema and the compiled statements live as long
    as the daemon. Left in the collector's oldest generation, each full pass walked all
    of them: 90 to 180 ms during which the manager answered nothing (its heartbeat p99 was
    that pause). Frozen, they are never scanned; what the daemon makes later still is.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
