"""A task group that a component's ``run()`` owns and its other methods start tasks in.

The shape every such component had written by hand (a pool, the session manager):

* ``run()`` awaits ``OwnedTaskGroup.run()``, which holds an ``asyncio.TaskGroup`` open;
* the component's methods, called from other tasks (a request, a callback), start work
  with ``spawn(coro, name)``: a failure is logged and ends that task only, because one
  request's bug must not cancel its neighbours (a bare task group would cancel them all);
* ``stop()`` cancels what is still running and waits until it has ended (the
  component's own graceful stop comes first: it stops its processes, then the helpers
  that followed them are cancelled); cancelling ``run()`` does the same.

``spawn`` before ``run()`` has entered its group, or once it is stopping, starts
nothing: the coroutine is closed (never left unawaited) and None is returned, so that
the caller decides what "too late" means for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """Raised inside the group to leave it: the way a task group cancels what is left."""


class OwnedTaskGroup:
    """One component's task group; ``name`` prefixes what its log lines say."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tg: asyncio.TaskGroup | None = None
        self._up = asyncio.Event()
        self._stop = asyncio.Event()
        self._done = asyncio.Event()

    @property
    def running(self) -> bool:
        """Whether tasks can be started in it now."""
        return self._tg is not None and not self._stop.is_set()

    async def run(self) -> None:
        """Hold the group open until ``stop()`` (or until cancelled), then end every task in it."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._up.set()
                await self._stop.wait()
                raise _Stopped
        except* _Stopped:
            pass
        finally:
            self._tg = None
            self._done.set()

    async def wait_up(self) -> None:
        """Wait until ``run()`` has entered its group, or its task (``start_in``) ended first."""
        await self._up.wait()

    def start_in(self, owner: OwnedTaskGroup, name: str) -> asyncio.Task[None] | None:
        """Run this group's ``run()`` as a task of ``owner`` (a pool's group in the router's).

        None if ``owner`` does not run. A task cancelled before its first step never
        enters the group: ``wait_up()`` then returns all the same, and ``running`` says so.
        """
        task = owner.spawn(self.run(), name)
        if task is not None:
            task.add_done_callback(lambda _: self._up.set())
        return task

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run ``coro`` in the group, its failure logged; None if the group does not run."""
        if self._tg is not None and not self._stop.is_set():
            try:
                task = self._tg.create_task(logged(coro, f"{self.name}: {name}"), name=name)
            except RuntimeError:  # the group is shutting down
                pass
            else:
                # Cancelled before its first step, the wrapper never awaited ``coro``:
                # closed here, it cannot surface as "never awaited" when collected.
                task.add_done_callback(lambda _: coro.close())
                return task
        coro.close()
        return None

    async def stop(self) -> None:
        """Cancel every task still in the group and wait until ``run()`` has ended.

        Returns at once if ``run()`` is not running (never started, or ended already).
        """
        self._stop.set()
        if self._tg is not None:
            await self._done.wait()


async def logged(coro: Coroutine[Any, Any, None], what: str) -> None:
    """Await ``coro``; an exception is logged naming ``what``, not raised (cancellation is)."""
    try:
        await coro
    except Exception:
        log.exception("%s failed", what)


__all__ = ["OwnedTaskGroup", "logged"]
