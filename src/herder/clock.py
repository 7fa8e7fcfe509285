"""The clock components read and sleep on, so that a test can move time itself.

A component that acts on time (the manager's lease keeper, dispatcher and registry
sweeper, the agent's lease watch) takes a ``Clock`` as a constructor argument, the
system's by default. A test hands it a clock of its own whose ``sleep`` returns only
when the test advances it, and watches the component act at the moment it should,
without waiting out real seconds.

Only what a component *decides* by time goes through its clock; deadlines that guard
I/O (``asyncio.timeout`` around a call) stay on the event loop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Protocol


class Clock(Protocol):
    """Where a component reads the time and waits for it to pass."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, deadlines)."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (what is written down, expiry times shown to users)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock (at once for 0 or less)."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()


async def wait_within(awaitable: Awaitable[object], timeout_s: float, clock: Clock = SYSTEM_CLOCK) -> bool:
    """Await ``awaitable`` for at most ``timeout_s`` on ``clock``; whether it completed.

    On time out it is cancelled. The system clock's sleep is the event loop's own timer,
    so it is awaited under a deadline (no second task); any other clock's sleep races it.
    """
    if isinstance(clock, SystemClock):
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout_s)):
                await awaitable
                return True
        return False
    async with asyncio.TaskGroup() as tg:
        done = tg.create_task(_completed(awaitable))
        sleeper = tg.create_task(clock.sleep(timeout_s))
        await asyncio.wait({done, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        sleeper.cancel()
    return not done.cancelled() and done.result()


async def _completed(awaitable: Awaitable[object]) -> bool:
    await awaitable
    return True


async def wait_event(event: asyncio.Event, timeout_s: float, clock: Clock = SYSTEM_CLOCK) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passed on ``clock``; whether it is set."""
    if not event.is_set():
        await wait_within(event.wait(), timeout_s, clock)
    return event.is_set()


__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "wait_event", "wait_within"]
