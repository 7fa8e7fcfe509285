"""The dispatcher: claims work in the database for linked workers and pushes it as ``assign``.

Rounds of writes that submit or finish work claim for free slots themselves
(``writes.Writes``, which hands what it claimed to ``Dispatcher.push``); the dispatcher
covers the rest: a worker that just linked, work that another manager or the lease
keeper put back in the queue. It runs whenever something may have changed (``wake()``)
and once every ``DISPATCH_TICK_S`` for what changed out of its sight.

Claims are made in the database, compare-and-set (``store.claims``), so two managers on
one database never hand out one item twice. An ``assign`` lost with its connection is
no loss: the item stays assigned until its lease runs out and is then queued again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from herder.clock import SYSTEM_CLOCK, Clock, wait_event
from herder.manager.documents import item_document
from herder.rpc import ConnectionLost, Peer

log = logging.getLogger(__name__)

# How often the dispatcher looks without being woken: what other managers and the lease
# keeper put back in the queue waits this long at most.
DISPATCH_TICK_S = 1.0


class Claims(Protocol):
    """Claims of queued work for workers, in the database (``writes.Writes``)."""

    async def claim(self, worker_ids: list[int], most: int | None = None) -> Sequence[Any]:
        """Rows of the items claimed for those workers' free slots (empty: nothing to do)."""
        ...


class Peers(Protocol):
    """The links of the workers connected to this manager (``agents.LinkedWorkers``)."""

    def live_ids(self) -> list[int]:
        """The ids of the workers linked now whose link was heard from lately."""
        ...

    def get(self, worker_id: int) -> Peer | None:
        """A worker's link, or None when it is not linked here."""
        ...


class Assigned(Protocol):
    """Told which task a work item handed out belongs to (``output.Output``)."""

    def assigned(self, item_id: int, task_id: int) -> None: ...


class Dispatcher:
    """Hands out work to linked workers whenever something may have changed."""

    def __init__(
        self,
        claims: Claims,
        peers: Peers,
        assigned: Assigned,
        *,
        tick_s: float = DISPATCH_TICK_S,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._claims = claims
        self._peers = peers
        self._assigned = assigned
        self._tick_s = tick_s
        self._clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something changed that may let work be handed out."""
        self._wake.set()

    async def run(self) -> None:
        """Dispatch when woken, or every tick, until cancelled."""
        while True:
            await wait_event(self._wake, self._tick_s, self._clock)
            self._wake.clear()
            try:
                await self.dispatch()
            except Exception:  # the database is away for a moment: the next tick retries
                log.exception("dispatching work failed")

    async def dispatch(self) -> None:
        """Claim work for every free slot of the linked workers at once, and push it."""
        while worker_ids := self._peers.live_ids():
            claimed = await self._claims.claim(worker_ids)
            if not claimed:
                return
            await self.push(claimed)

    async def push(self, claimed: Sequence[Any]) -> None:
        """Send each claimed item to its worker (one whose link is gone gets it back by lease)."""
        for row in claimed:
            self._assigned.assigned(row.id, row.task_id)
            peer = self._peers.get(row.worker_id)
            if peer is None or peer.closed:
                continue  # its lease will run out and the item will be queued again
            with contextlib.suppress(ConnectionLost):
                await peer.notify("assign", item_document(row))

    async def stop(self, running: Sequence[tuple[int, int, int]]) -> None:
        """Tell workers to stop attempts that were canceled (best effort: heartbeats too)."""
        for worker_id, item_id, attempt in running:
            peer = self._peers.get(worker_id)
            if peer is not None:
                with contextlib.suppress(ConnectionLost):
                    await peer.notify("stop", item_id, attempt)


__all__ = ["DISPATCH_TICK_S", "Dispatcher"]
