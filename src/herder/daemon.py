"""The lifecycle the agent and the manager share: ``run()`` in a task, started, stopped, awaited.

A daemon is embeddable (``async with Agent(...)``, ``async with Manager(...)``) and
runs as a binary (``herder agent``, ``herder manager``) the same way:

* ``_launch()`` starts ``run()`` as the daemon's main task, which owns everything the
  daemon runs (its task groups);
* ``_wait_ready(ready, failure)`` waits until ``ready`` is set (the HTTP server
  listens), or raises if ``run()`` ended first: what it raised, else ``failure``;
* ``request_stop()`` asks for a graceful stop (by default: cancel the main task;
  a daemon with an HTTP server lets in-flight requests finish first);
  ``wait_stopped()`` waits for ``run()`` to end;
* ``_stop_main()`` does both, and cancels ``run()`` if the wait itself is cancelled;
  ``_abandon_main()`` cancels it outright (a start that failed half way).

A main task that ends with an exception while no stop was asked is a crash: it is
logged at once, naming the daemon, and raised again to whoever waits for the stop.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

log = logging.getLogger(__name__)


class Component(Protocol):
    """A long-running part of a daemon (a dispatcher, a sweeper, a lease keeper)."""

    async def run(self) -> None:
        """Work until cancelled; an exception out of it is a crash of the daemon."""
        ...


async def run_components(components: Mapping[str, Component]) -> None:
    """Run each component in one task group until cancelled (stopping is cancelling this).

    A component that raises cancels the others, and the error goes up to the daemon.
    """
    async with asyncio.TaskGroup() as tg:
        for name, component in components.items():
            tg.create_task(component.run(), name=name)


class Daemon(abc.ABC):
    """Base of a long-running daemon whose work is ``run()``."""

    name = "daemon"

    def __init__(self) -> None:
        self._main: asyncio.Task[None] | None = None
        self._stop_requested = False

    @abc.abstractmethod
    async def run(self) -> None:
        """Everything the daemon does, until it is stopped (or cancelled)."""

    def _launch(self) -> asyncio.Task[None]:
        """Start ``run()`` as the main task (once)."""
        assert self._main is None, f"the {self.name} was started already"
        self._stop_requested = False
        self._main = asyncio.get_running_loop().create_task(self.run(), name=f"herder-{self.name}")
        self._main.add_done_callback(self._report_crash)
        return self._main

    def _report_crash(self, main: asyncio.Task[None]) -> None:
        if main.cancelled():
            return
        exc = main.exception()  # retrieved here: never "exception was never retrieved"
        if exc is not None and not self._stop_requested:
            log.error("the %s stopped unexpectedly: %s", self.name, exc, exc_info=exc)

    async def _wait_ready(self, ready: asyncio.Event, failure: Exception) -> None:
        """Wait until ``ready`` is set, or until ``run()`` ended before.

        Raises:
            Exception: what ended ``run()``; ``failure`` if it ended without raising.
        """
        main = self._main
        assert main is not None, "_launch() first"
        async with asyncio.TaskGroup() as tg:
            waiter = tg.create_task(ready.wait())
            await asyncio.wait({waiter, main}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        if main.done() and not ready.is_set():
            await main  # raises what stopped it
            raise failure

    def request_stop(self) -> None:
        """Begin a stop; returns at once (``wait_stopped()`` waits for its end)."""
        self._stop_requested = True
        if self._main is not None:
            self._main.cancel()

    async def wait_stopped(self) -> None:
        """Wait until ``run()`` has ended (a crash is raised; cancelling this waiter leaves it)."""
        if self._main is not None:
            await asyncio.shield(self._main)

    async def _stop_main(self) -> None:
        """Stop and wait; if this wait is cancelled, cancel ``run()`` and wait for that.

        Raises:
            Exception: what ``run()`` raised (a crash), after it ended.
        """
        main = self._main
        if main is None:
            return
        self.request_stop()
        try:
            await asyncio.wait({main})
        finally:
            if not main.done():
                main.cancel()
                await asyncio.wait({main})
        if not main.cancelled():
            main.result()

    async def _abandon_main(self) -> None:
        """Cancel ``run()`` and wait for it, ignoring what it raised (a start that failed half way)."""
        main = self._main
        if main is None:
            return
        self._stop_requested = True
        main.cancel()
        await asyncio.wait({main})


__all__ = ["Component", "Daemon", "run_components"]
