"""A cancel or a delete reaches the worker whichever manager holds its link (#17).

A manager tells a worker linked to it to ``stop`` an attempt at once (``Dispatcher.stop``).
A worker linked to another manager on the same PostgreSQL is told by that manager: the
manager that canceled sends ``NOTIFY herder_stops`` in the cancel's own transaction
(delivered at its commit, never for a cancel rolled back), naming the attempts
``[worker, item, attempt]``; every manager hears it on the registry's LISTEN connection
(``RegistryStore.follow``) and the one holding the worker's link forwards the ``stop``.

Nothing depends on the NOTIFY arriving: the attempt is fenced off in the database, so the
worker's next report or heartbeat is refused and it stops the work then (within a
heartbeat interval). The NOTIFY only makes it at once. A payload stays under
PostgreSQL's 8000 bytes: a cancel of many running attempts is sent in several.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from sqlalchemy import text

log = logging.getLogger(__name__)

CHANNEL = "herder_stops"
PER_NOTIFY = 200  # attempts per payload: [worker, item, attempt] each, well under 8000 bytes

Attempt = tuple[int, int, int]  # worker id, work item id, attempt number


class Linked(Protocol):
    """The workers linked to this manager (``agents.LinkedWorkers``)."""

    def ids(self) -> list[int]: ...


class Stopper(Protocol):
    """Tells linked workers to stop attempts (``dispatch.Dispatcher``)."""

    async def stop(self, running: Sequence[Attempt]) -> None: ...


class EndedOutput(Protocol):
    """Where the lines this manager kept for items ended elsewhere are stored (``output.Output``)."""

    async def move_items_ended(self, item_ids: Iterable[int]) -> None: ...


class Stops:
    """Stops attempts here, hands those of workers linked elsewhere over, forwards others'."""

    def __init__(
        self, linked: Linked, stopper: Stopper, manager_id: str, output: EndedOutput | None = None
    ) -> None:
        """``output``: where the lines kept here of the items stopped on another's word go:
        the manager that ended them stored only its own (a cancel through it)."""
        self._linked = linked
        self._stopper = stopper
        self._output = output
        self._manager_id = manager_id  # its own NOTIFYs are not forwarded again
        self._heard: list[Attempt] = []
        self._arrived = asyncio.Event()
        self.forwarded = 0  # since start: attempts stopped on another manager's word

    async def stop(self, db: Any, running: Sequence[Attempt]) -> None:
        """Stop ``running``: this manager's links now, the others' at ``db``'s commit.

        ``db`` is the cancel's session; on SQLite (one manager) nothing is announced.
        """
        linked = set(self._linked.ids())
        elsewhere = [list(a) for a in running if a[0] not in linked]
        if elsewhere and db.get_bind().dialect.name == "postgresql":
            for start in range(0, len(elsewhere), PER_NOTIFY):
                payload = json.dumps({"m": self._manager_id, "s": elsewhere[start : start + PER_NOTIFY]})
                await db.execute(
                    text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
                )
        await self._stopper.stop(running)

    def heard(self, payload: str | None) -> None:
        """A NOTIFY on the channel: queue the attempts of workers linked here."""
        if payload is None:  # the LISTEN connection came back: the fence covers what was missed
            return
        try:
            message = json.loads(payload)
            attempts = [(int(w), int(i), int(n)) for w, i, n in message["s"]]
        except (ValueError, TypeError, KeyError) as error:
            log.warning("a stop notification that cannot be read (%s): %.80r", error, payload)
            return
        if message.get("m") == self._manager_id:
            return
        linked = set(self._linked.ids())
        mine = [a for a in attempts if a[0] in linked]
        if mine:
            self._heard.extend(mine)
            self._arrived.set()

    async def run(self) -> None:
        """Forward the stops heard for this manager's workers, until cancelled."""
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            attempts, self._heard = self._heard, []
            for worker_id, item_id, attempt in attempts:
                log.info(
                    "stopping work item %d (attempt %d) of worker %d: canceled elsewhere",
                    item_id,
                    attempt,
                    worker_id,
                )
            try:
                await self._stopper.stop(attempts)
            except Exception:  # best effort: the fence stops the work at its next heartbeat
                log.exception("forwarding stops failed")
                continue
            self.forwarded += len(attempts)
            if self._output is not None:
                try:
                    await self._output.move_items_ended({item for _, item, _ in attempts})
                except Exception:  # the lines stay in memory, bounded; the work is stopped
                    log.exception("storing the output of work stopped elsewhere failed")


__all__ = ["CHANNEL", "Stops"]
