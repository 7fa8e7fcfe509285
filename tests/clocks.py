"""A clock tests move by hand (``herder.clock.Clock``): time passes only in ``advance``.

A component given a ``ManualClock`` sleeps until the test advances the clock past the
end of its sleep; ``wait_asleep`` lets the test wait (with a deadline) until the
component is back asleep, that is, done with what the last advance made it do.
"""

from __future__ import annotations

import asyncio

# ``time()`` runs this far ahead of ``monotonic()``, as the wall clock does the monotonic one.
EPOCH_OFFSET_S = 1_700_000_000.0
WAIT_ASLEEP_S = 10.0


class ManualClock:
    """Monotonic and wall time that move only when ``advance`` says."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self._now = start_s
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._asleep = asyncio.Event()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + EPOCH_OFFSET_S

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self._now + seconds, wake)
        self._sleepers.append(entry)
        self._asleep.set()
        try:
            await wake
        finally:
            self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        """Move time on; sleepers whose end passed wake up (they run at the next await)."""
        self._now += seconds
        due = [wake for until, wake in self._sleepers if until <= self._now and not wake.done()]
        if due:
            self._asleep.clear()
        for wake in due:
            wake.set_result(None)

    async def wait_asleep(self) -> None:
        """Wait until something sleeps on this clock (since the last advance that woke one)."""
        async with asyncio.timeout(WAIT_ASLEEP_S):
            while not self._asleep.is_set() or not self._sleepers:
                self._asleep.clear()
                await self._asleep.wait()

    def sleeping(self) -> int:
        """How many sleeps are waiting for time to pass."""
        return len(self._sleepers)
