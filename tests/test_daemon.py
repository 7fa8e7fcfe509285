"""The lifecycle the agent and the manager share (``herder.daemon.Daemon``), on a small daemon.

Its ``run`` does what the test tells it: become ready, then wait to be stopped, or fail
before or after it is ready. The agent's and the manager's own starts and stops are
covered by every test that runs them.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from herder.daemon import Daemon


class Boom(Exception):
    pass


class Small(Daemon):
    name = "small"

    def __init__(self, *, fail_before_ready: bool = False) -> None:
        super().__init__()
        self.ready = asyncio.Event()
        self.crash = asyncio.Event()
        self.stopped_cleanly = False
        self._fail_before_ready = fail_before_ready

    async def run(self) -> None:
        if self._fail_before_ready:
            raise Boom("cannot start")
        self.ready.set()
        try:
            await self.crash.wait()
        except asyncio.CancelledError:
            self.stopped_cleanly = True
            raise
        raise Boom("fell over")

    async def start(self) -> None:
        self._launch()
        await self._wait_ready(self.ready, RuntimeError("stopped during start-up"))

    async def stop(self) -> None:
        await self._stop_main()


async def test_a_stop_cancels_run_and_waits_for_it() -> None:
    daemon = Small()
    await daemon.start()
    await daemon.stop()
    assert daemon.stopped_cleanly


async def test_a_failure_before_ready_is_raised_by_the_start() -> None:
    daemon = Small(fail_before_ready=True)
    with pytest.raises(Boom, match="cannot start"):
        await daemon.start()


async def test_a_crash_is_logged_at_once_and_raised_at_the_stop(caplog: pytest.LogCaptureFixture) -> None:
    daemon = Small()
    await daemon.start()
    with caplog.at_level(logging.ERROR, logger="herder.daemon"):
        daemon.crash.set()
        with pytest.raises(Boom):
            await asyncio.wait_for(daemon.wait_stopped(), 10)
    assert "the small stopped unexpectedly: fell over" in caplog.text
    with pytest.raises(Boom):
        await daemon.stop()


class Stubborn(Small):
    """A graceful stop that never finishes (a request that hangs past the grace)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()

    def request_stop(self) -> None:
        self.asked.set()


async def test_cancelling_the_stop_still_ends_run() -> None:
    daemon = Stubborn()
    await daemon.start()
    stopping = asyncio.ensure_future(daemon.stop())
    await asyncio.wait_for(daemon.asked.wait(), 10)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert daemon.stopped_cleanly
