"""The lease keeper: puts work whose worker stopped heartbeating back in the queue.

A piece of work handed to a worker is leased to it (``lease_s``, several heartbeat
intervals); each heartbeat naming it extends the lease. The keeper ticks every half
interval (at least once a second, at most ten times) and requeues the work whose lease
ended ``lease_margin_s`` ago: the agent stopped it ``lease_margin_s`` before its end by
its own clock (docs/manager.md, "At most one attempt").

A lease is judged only by heartbeats this manager was in a position to receive: after
a start, or a tick that came late (the manager was stopped, swapped out, its disk
stalled), every worker gets a fresh lease before anything is requeued. With keys, each
tick also reads the revocations other managers made.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from herder.clock import SYSTEM_CLOCK, Clock
from herder.manager.store import queries

log = logging.getLogger(__name__)

# The keeper's tick is half the heartbeat interval, within these bounds.
MIN_TICK_S = 0.1
MAX_TICK_S = 1.0


class Transactions(Protocol):
    """A database session inside a transaction (``ManagerRuntime.transaction``)."""

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...


class Revocations(Protocol):
    """Keys revoked elsewhere, read each tick (``authority.Authority``)."""

    async def refresh(self, db: Any) -> None: ...


class EndedWork(Protocol):
    """Told which tasks' work a tick requeued or failed (``output.Output``): the output of
    items that ended so moves to the database."""

    async def move_ended(self, task_id: int) -> None: ...


class LeaseKeeper:
    """Requeues work whose lease ran out, for as long as ``run`` runs."""

    def __init__(
        self,
        db: Transactions,
        *,
        heartbeat_interval_s: float,
        lease_s: float,
        lease_margin_s: float,
        revocations: Revocations | None = None,
        ended_work: EndedWork | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._db = db
        self._ended_work = ended_work
        self._lease_s = lease_s
        self._margin_s = lease_margin_s
        self._revocations = revocations
        self._clock = clock
        self.tick_s = max(MIN_TICK_S, min(MAX_TICK_S, heartbeat_interval_s / 2))
        self.requeued_total = 0  # tasks whose work was requeued for a lost lease (/metrics)

    async def run(self) -> None:
        """Tick until cancelled; a failed tick (the database away a moment) is logged and retried."""
        clock = self._clock
        watching_since = last = clock.monotonic()
        while True:
            await clock.sleep(self.tick_s)
            now = clock.monotonic()
            if now - last > self.tick_s + self._margin_s:
                log.warning(
                    "the lease keeper ran %.1f s late (the manager was stalled): every worker "
                    "gets a fresh lease of %.1f s before its work is requeued",
                    now - last - self.tick_s,
                    self._lease_s,
                )
                watching_since = now
            try:
                await self.tick(self.judgeable(now - watching_since))
            except Exception:  # the database is away for a moment: try again next tick
                log.exception("checking leases failed")
            last = now  # a check that took long (a stalled disk) makes the next tick late too

    async def tick(self, judge: bool) -> int:
        """One check: requeue what expired (when ``judge``), read revocations; tasks requeued."""
        async with self._db.transaction() as db:
            requeued: set[int] = set()
            if judge:
                requeued = await queries.requeue_expired(db, self._margin_s)
            if self._revocations is not None:  # revocations made elsewhere, within a tick
                await self._revocations.refresh(db)
        self.requeued_total += len(requeued)
        if requeued:
            log.info("requeued the work of %d tasks whose workers were lost", len(requeued))
        if self._ended_work is not None:
            for task_id in sorted(requeued):
                await self._ended_work.move_ended(task_id)
        return len(requeued)

    def judgeable(self, watched_s: float) -> bool:
        """Whether this manager has listened long enough for a silent worker to be lost.

        A worker linked here heartbeats within each interval; one whose heartbeats the
        manager could not read (it was stalled, or not running) is not silent.
        """
        return watched_s >= self._lease_s + self._margin_s


__all__ = ["LeaseKeeper"]
