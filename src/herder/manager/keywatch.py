"""Every manager on one PostgreSQL honours a revocation at once (#17).

A revocation made anywhere (``POST /auth/keys/{id}/revoke`` on any manager, ``herder
keys revoke``) sends ``NOTIFY herder_keys`` when it commits (``Authority.revoke``). The
registry's LISTEN connection hears it (``RegistryStore.follow``: one connection per
manager for every channel) and wakes this component, which reads the keys again. A burst
of revocations costs one read per wake-up, not one per NOTIFY.

The lease keeper still reads the keys about once a second (``LeaseKeeper.tick``): the
safety net for a NOTIFY lost while the LISTEN connection was away (its return wakes
this too), and the only way on SQLite, where one manager runs and ``herder keys revoke``
is another process.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from herder.manager.authority import Authority

log = logging.getLogger(__name__)

RETRY_S = 1.0  # after a failed read (the database away): the lease keeper's pace


class Transactions(Protocol):
    """A transaction on the manager's database (``ManagerRuntime.transaction``)."""

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...


class KeyWatch:
    """Reads the keys again whenever another process announces a revocation."""

    def __init__(self, authority: Authority, db: Transactions) -> None:
        self._authority = authority
        self._db = db
        self._changed = asyncio.Event()
        self.reads = 0  # since start: how many times a NOTIFY made it read the keys

    def changed(self, _payload: str | None = None) -> None:
        """A NOTIFY on the keys' channel (or the LISTEN connection back): read them again."""
        self._changed.set()

    async def run(self) -> None:
        """Read the keys after each wake-up, until cancelled."""
        while True:
            await self._changed.wait()
            self._changed.clear()  # what arrives during the read wakes the next one
            try:
                async with self._db.transaction() as db:
                    await self._authority.refresh(db)
                self.reads += 1
            except Exception as error:  # the database away: the lease keeper's tick retries too
                log.warning("cannot read the keys after a revocation elsewhere: %s", error)
                self._changed.set()
                await asyncio.sleep(RETRY_S)


__all__ = ["KeyWatch"]
