"""The registry's shared state (#17): its rows written, and every manager's index kept current.

``herder.manager.services.Services`` answers queries from an in-memory index (they are
hot); this keeps that index the database's, for one manager or several on one
PostgreSQL:

* **Writes** (registrations, renewals, removals, expiry) go through one group commit
  (``herder.manager.batcher``): what arrives while a batch is written shares the next
  transaction, so a renewal costs a share of one ``UPDATE`` executemany and one commit.
  On PostgreSQL the same transaction sends ``NOTIFY herder_registry`` naming the ids
  (never metadata: a payload must stay under 8000 bytes), delivered at commit.
* **Reading the others' changes** (PostgreSQL): a dedicated asyncpg connection
  ``LISTEN``s; changed ids are read again in batches and handed to the replica
  (``Replica.reconcile``), renewals applied as they come. The connection is probed every
  ``PROBE_S``; once lost, it is opened again and the whole table read (nothing missed
  while away).
* **Managers** beat every ``BEAT_S`` in ``managers``. A manager that has not beaten for
  ``DEAD_AFTER_S`` (or, on this host, whose pid is gone) is dead: any other deletes the
  registrations its links kept. A manager found dead while it lived (a stall, a partition
  from the database) joins again and writes back what its links still keep.
* **Start**: a manager joins, drops the dead (its own previous life included), and
  reads every row before it serves. On SQLite only one manager runs, so every
  link-held row it did not write is dropped at start.

The bound: a SIGKILLed manager's link-held registrations disappear from the others
within ``DEAD_AFTER_S + BEAT_S`` (6 s) plus a NOTIFY, or at once when it restarts on the
same host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from herder.manager.batcher import Batcher
from herder.manager.store import db as database
from herder.manager.store import registrations as rows
from herder.manager.store.registrations import CHANNEL, Held
from herder.registry import Registration

log = logging.getLogger(__name__)

T = TypeVar("T")

BEAT_S = 1.0  # a manager's heartbeat in ``managers``: one small UPDATE a second
# Five missed beats: a manager whose loop stalls for a second or two under load is not
# declared dead (which would drop its links' registrations until it joins again).
DEAD_AFTER_S = 5.0
PROBE_S = 2.0  # the LISTEN connection is probed this often (a partition closes no socket)
PROBE_TIMEOUT_S = 2.0
RECONNECT_S = 1.0  # between attempts to open the LISTEN connection again
LEAVE_TIMEOUT_S = 2.0  # a stopping manager's last write (its links' rows, its record)
LISTENER_NAME = "herder-registry"  # the LISTEN connection's application_name, with the manager's id


class Replica(Protocol):
    """What the store keeps current: the manager's index (``Services``)."""

    def reconcile(self, ids: Iterable[str], found: Sequence[Held], *, keep_held: bool = False) -> None:
        """Make ``ids`` what ``found`` says (an id not in ``found`` is gone).

        ``keep_held``: this manager was taken for dead, so the rows of its open links are
        gone but not for good (its next beat writes them back): keep those.
        """

    def renewed(self, renewals: Sequence[Sequence[Any]]) -> None:
        """Apply other managers' renewals, ``[id, expires_at]`` each."""

    def local_ids(self) -> set[str]:
        """Every id in the index (to find, at a reload, those deleted meanwhile)."""

    def held(self) -> list[Registration]:
        """The registrations this manager's links keep now."""

    def held_ids(self) -> set[str]:
        """The ids of ``held()``."""


@dataclass(frozen=True)
class _Put:
    registration: Registration
    holder: str | None


@dataclass(frozen=True)
class _Renew:
    id: str
    expires_at: float
    now: float


@dataclass(frozen=True)
class _Remove:
    id: str
    holder: str | None  # only if this manager's link keeps it
    registered_at: float | None  # only if it is still this registration


@dataclass(frozen=True)
class _Expire:
    now: float


_Op = _Put | _Renew | _Remove | _Expire


@dataclass(frozen=True)
class RegistryStoreStatistics:
    """Counts since start: full reads of the table, batches of ids read after a NOTIFY."""

    reloads: int
    reads: int
    listening: bool


class RegistryStore:
    """One manager's side of the shared registry: writes, its heartbeat, its LISTEN."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.manager_id = secrets.token_hex(8)  # a new one at every start
        self.postgres = engine.dialect.name == "postgresql"
        # On SQLite the manager's engine has one connection, which every route's session
        # waits for: renewals (heartbeats with a deadline) get a connection of their own.
        # PostgreSQL's pool has room.
        self._own_engine = not self.postgres and engine.url.database not in (None, "", ":memory:")
        self._engine = (
            database.create_engine(engine.url.render_as_string(hide_password=False))
            if self._own_engine
            else engine
        )
        # A deadlock or a serialisation failure between managers is written again (Batcher).
        self._writes: Batcher[_Op, Any] = Batcher("registry", self._flush)
        self._replica: Replica | None = None
        self._listener: Any = None  # asyncpg.Connection while LISTENing
        self._lost = asyncio.Event()
        self._pending: set[str] = set()  # ids the others changed, to read again
        self._arrived = asyncio.Event()
        self._reloads = 0
        self._reads = 0
        # Other channels heard on the same LISTEN connection (``follow``): the keys' (#17).
        self._followed: dict[str, Callable[[str | None], None]] = {}

    def statistics(self) -> RegistryStoreStatistics:
        return RegistryStoreStatistics(self._reloads, self._reads, self._listener is not None)

    def follow(self, channel: str, changed: Callable[[str | None], None]) -> None:
        """Call ``changed(payload)`` at each NOTIFY on ``channel`` (PostgreSQL; before
        ``start``), and ``changed(None)`` whenever the LISTEN connection comes back (what
        was sent meanwhile is lost)."""
        self._followed[channel] = changed

    # -- writes (each shares a transaction with whatever arrives meanwhile) ----------------

    async def put(self, registration: Registration, holder: str | None) -> None:
        """Insert or replace ``registration`` (``holder``: the manager whose link keeps it)."""
        await self._writes.submit(_Put(registration, holder))

    async def renew(self, id: str, expires_at: float, now: float) -> bool:
        """Move ``id``'s expiry; False if no row with a TTL is alive at ``now``."""
        return bool(await self._writes.submit(_Renew(id, expires_at, now)))

    async def remove(
        self, id: str, *, held: bool = False, registered_at: float | None = None
    ) -> Registration | None:
        """Delete the row ``id``; it. For a closed link: ``held``, only if this manager's
        link keeps it, and ``registered_at``, only if nobody registered the id again since."""
        result = await self._writes.submit(_Remove(id, self.manager_id if held else None, registered_at))
        return result if isinstance(result, Registration) else None

    async def expire(self, now: float) -> list[Registration]:
        """Delete the rows whose TTL ran out; those (only to the manager that deleted them).

        Written after the renewals queued before it (a batch renews, then expires): a
        renewal that arrived in time is not overtaken by the sweep.
        """
        return list(await self._writes.submit(_Expire(now)))

    async def read(self, ids: Iterable[str] | None = None) -> list[Held]:
        """The rows of ``ids`` that exist (every row: ``None``)."""
        wanted = None if ids is None else list(ids)
        return await self._run(lambda conn: rows.read(conn, wanted))

    async def _run(self, work: Callable[[Connection], T]) -> T:
        async with self._engine.begin() as conn:
            return await conn.run_sync(work)

    async def _flush(self, ops: list[_Op]) -> list[Any]:
        """One transaction for a batch: puts and removals in order, then the renewals."""

        def work(conn: Connection) -> list[Any]:
            answers: list[Any] = [None] * len(ops)
            changed: list[str] = []
            renewals: list[tuple[int, _Renew]] = []
            expiries: list[tuple[int, _Expire]] = []
            puts: list[tuple[Registration, str | None]] = []  # consecutive ones: one executemany
            for n, op in enumerate(ops):
                if isinstance(op, _Put):
                    puts.append((op.registration, op.holder))
                    changed.append(op.registration.id)
                elif isinstance(op, _Remove):
                    rows.put(conn, puts)
                    puts = []
                    answers[n] = rows.remove(conn, op.id, op.holder, op.registered_at)
                    if answers[n] is not None:
                        changed.append(op.id)
                elif isinstance(op, _Renew):
                    renewals.append((n, op))
                else:
                    expiries.append((n, op))
            rows.put(conn, puts)
            if renewals:
                now = min(op.now for _, op in renewals)
                done = rows.renew(conn, [(op.id, op.expires_at) for _, op in renewals], now)
                for n, op in renewals:
                    answers[n] = op.id in done
            renewed = [(op.id, op.expires_at) for _, op in renewals if op.id in done] if renewals else []
            for n, expiry in expiries:  # after the renewals: those that came in time win
                answers[n] = rows.expire(conn, expiry.now)
                changed.extend(r.id for r in answers[n])
            rows.notify(conn, self.manager_id, changed=changed, renewed=renewed)
            return answers

        return await self._run(work)

    # -- start, run, stop ----------------------------------------------------------------

    async def start(self, replica: Replica) -> None:
        """Join, drop dead managers' links, and fill ``replica`` with every row (before serving).

        Raises:
            sqlalchemy.exc.DBAPIError, OSError: the database cannot be used.
        """
        self._replica = replica
        now = time.time()

        def join(conn: Connection) -> list[Registration]:
            rows.join(conn, self.manager_id, socket.gethostname(), os.getpid(), now)
            if not self.postgres:  # one manager on SQLite: every other holder is a past life
                others = [m[0] for m in rows.managers(conn) if m[0] != self.manager_id]
            else:
                others = self._dead(rows.managers(conn), now)
            gone = rows.drop_managers(conn, others) + rows.drop_orphans(conn, self.manager_id)
            rows.notify(conn, self.manager_id, changed=[r.id for r in gone], dead=others)
            return gone

        try:
            gone = await self._run(join)
            if gone:
                log.info("dropped %d registrations held by managers no longer running", len(gone))
            if self.postgres:
                await self._listen()  # before reading: a change meanwhile is read again after
            await self.reload()
        except BaseException:  # what the start opened, it closes (``run`` will not)
            await self._drop_listener()
            if self._own_engine:
                await self._engine.dispose()
            raise

    async def reload(self) -> None:
        """Read every row and make the replica match (ids gone meanwhile removed).

        If this manager's record is gone in the same snapshot (taken for dead while its
        LISTEN was away), its links' registrations are kept: its next beat writes them back.
        """
        assert self._replica is not None
        me = self.manager_id
        before = self._replica.local_ids()
        found, alive = await self._run(lambda conn: (rows.read(conn), rows.has_manager(conn, me)))
        # What this manager itself changed while the rows were read (its writes that waited
        # for the database, committed as it came back) is newer than the snapshot: taken
        # for gone, its own registrations left its index for good (its NOTIFYs are not
        # read back). The snapshot judges what was here before; those are read again.
        changed_meanwhile = before ^ self._replica.local_ids()
        self._replica.reconcile(before | {reg.id for reg, _ in found}, found, keep_held=not alive)
        if changed_meanwhile:
            self._pending.update(changed_meanwhile)
            self._arrived.set()
        self._reloads += 1

    async def run(self) -> None:
        """Beat, follow the others' changes, until cancelled; then leave (a last write)."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._beat_forever(), name="registry-beat")
                if self.postgres:
                    tg.create_task(self._keep_listening(), name="registry-listen")
                    tg.create_task(self._read_changes(), name="registry-changes")
        finally:
            await self._leave()

    async def _leave(self) -> None:
        """Delete this manager's record and what its links kept (links close as it stops)."""
        me = self.manager_id

        def work(conn: Connection) -> None:
            gone = rows.drop_managers(conn, [me])
            rows.notify(conn, me, changed=[r.id for r in gone], dead=[me])

        try:
            async with asyncio.timeout(LEAVE_TIMEOUT_S):
                await self._run(work)
        except Exception as error:  # the others drop them within DEAD_AFTER_S anyway
            log.warning("could not withdraw this manager's link-held registrations: %s", error)
        finally:
            await self._drop_listener()
            if self._own_engine:
                await self._engine.dispose()

    # -- the heartbeat ---------------------------------------------------------------------

    def _dead(self, managers: list[tuple[str, str, int, float]], now: float) -> list[str]:
        """Managers that stopped beating, or (on this host) whose process is gone."""
        host = socket.gethostname()
        dead = []
        for manager_id, hostname, pid, beat_at in managers:
            if manager_id == self.manager_id:
                continue
            if now - beat_at > DEAD_AFTER_S or (hostname == host and not _pid_alive(pid)):
                dead.append(manager_id)
        return dead

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(BEAT_S)
            try:
                await self._beat()
            except Exception as error:  # the database away: beat again next time
                log.warning("the registry's heartbeat failed: %s", error)

    async def _beat(self) -> None:
        assert self._replica is not None
        now = time.time()
        held = self._replica.held()

        def work(conn: Connection) -> tuple[bool, list[Registration]]:
            alive = rows.beat(conn, self.manager_id, now)
            if not alive:  # the others found this manager dead: join again, links and all
                rows.join(conn, self.manager_id, socket.gethostname(), os.getpid(), now)
                rows.put(conn, [(reg, self.manager_id) for reg in held])
            dead = self._dead(rows.managers(conn), now)
            # With the dead managers' links, rows no manager record holds: one written by
            # a manager as it stopped, after its last write took its record away.
            gone = rows.drop_managers(conn, dead) + rows.drop_orphans(conn, self.manager_id)
            changed = [r.id for r in gone] + ([] if alive else [r.id for r in held])
            rows.notify(conn, self.manager_id, changed=changed, dead=dead)
            return alive, gone

        alive, gone = await self._run(work)
        if not alive:
            log.warning("this manager was taken for dead (no heartbeat for %gs): joined again", DEAD_AFTER_S)
        if gone:
            log.info("dropped %d registrations held by managers that stopped", len(gone))
            self._replica.reconcile([r.id for r in gone], [])

    # -- LISTEN ----------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Open the dedicated connection and LISTEN on it."""
        import asyncpg  # type: ignore[import-untyped]

        dsn = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(
            dsn,
            timeout=PROBE_TIMEOUT_S * 5,
            server_settings={"application_name": f"{LISTENER_NAME}-{self.manager_id}"},
        )
        self._lost.clear()
        conn.add_termination_listener(lambda _conn: self._lost.set())
        await conn.add_listener(CHANNEL, self._notified)
        for channel, changed in self._followed.items():
            await conn.add_listener(channel, lambda *args, changed=changed: changed(args[-1]))
        self._listener = conn

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """A NOTIFY: renewals applied now, changed ids queued to be read."""
        try:
            message = json.loads(payload)
        except ValueError:
            log.warning("a registry notification that is not JSON: %.80r", payload)
            return
        if message.get("m") == self.manager_id:
            return  # this manager's own change, in its index already
        if self._replica is None:
            return
        if message.get("r"):
            self._replica.renewed(message["r"])
        changed = message.get("c") or []
        if self.manager_id in (message.get("x") or ()):  # taken for dead: the next beat joins again
            log.warning("another manager took this one for dead; its links' registrations are written back")
            held = self._replica.held_ids()
            changed = [i for i in changed if i not in held]  # gone from the rows, not for good
        if changed:
            self._pending.update(changed)
            self._arrived.set()

    async def _keep_listening(self) -> None:
        """Probe the LISTEN connection; when lost, open it again and reload everything."""
        while True:
            if self._listener is None:
                try:
                    await self._listen()
                    await self.reload()
                    for changed in self._followed.values():
                        changed(None)
                    log.info("the registry's LISTEN connection is back; the index was read again")
                except Exception as error:
                    log.warning("cannot LISTEN for registry changes yet: %s", error)
                    await self._drop_listener()
                    await asyncio.sleep(RECONNECT_S)
                    continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_S):
                    await self._lost.wait()
            try:
                if self._lost.is_set():
                    raise ConnectionError("the LISTEN connection closed")
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    await self._listener.fetchval("SELECT 1")
            except Exception as error:
                log.warning("the registry's LISTEN connection was lost (%s): opening it again", error)
                await self._drop_listener()

    async def _drop_listener(self) -> None:
        if self._listener is not None:
            self._listener.terminate()
            self._listener = None

    async def _read_changes(self) -> None:
        """Read again the rows the others changed, batch after batch."""
        assert self._replica is not None
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            ids, self._pending = self._pending, set()
            try:
                found = await self.read(ids)
            except Exception as error:
                log.warning("cannot read the registry's changes yet: %s", error)
                self._pending |= ids
                self._arrived.set()
                await asyncio.sleep(RECONNECT_S)
                continue
            self._replica.reconcile(ids, found)
            self._reads += 1


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["BEAT_S", "DEAD_AFTER_S", "LISTENER_NAME", "RegistryStore", "RegistryStoreStatistics", "Replica"]
