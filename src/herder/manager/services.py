"""The service registry on the manager (Kontrol's registry, #7): register, find, watch.

Services register under the seed's key ``/username/environment/name/version/region/
hostname/id`` with a URL and metadata, over the manager's ``/rpc`` link:

* ``register_service(key, url, metadata, ttl_s)``: kept alive by ``renew_service`` within
  ``ttl_s``, or, with ``ttl_s`` 0, by the open link itself (it drops out when the link
  closes);
* ``find_services(query)``: the live instances under a prefix of the key, general to
  specific, the version part possibly a range (``/alice/prod/math/>=1.2,<2``);
* ``deregister_service(id)``.

A registration without a URL (``None`` or ``""``) is **relayed** (``herder.manager.relay``):
for a peer that cannot listen (a browser tab), whose calls the manager passes over the
registering link itself. It is kept by that link only (``ttl_s`` 0), its URL is the
manager's ``/relay/<id>`` and its document says ``"relay": true``.

``GET /services?query=`` answers the same as ``find_services`` over HTTP, and
``WS /services/watch?query=`` streams ``registered``/``deregistered`` events.

With keys on, a user registers only under their own name and an admin under any; anyone
with a token may find and watch. Queries and watches are answered from this manager's
memory (``herder.registry.Index``). With a ``RegistryStore`` (every running manager has
one, #17) every change is written to the database first, and the index follows the
database: the other managers' changes arrive by NOTIFY (``reconcile``, ``renewed``), a
restarted manager reads what it had, and expiry is a ``DELETE`` that one manager wins
(the sweeper, ``run``). Without one (tests of the index alone) it is memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from herder.clock import SYSTEM_CLOCK, Clock, wait_event
from herder.manager.config import ServiceQuota
from herder.manager.registry_store import RegistryStore
from herder.manager.relay import Relay
from herder.manager.store.registrations import Held
from herder.manager.targets import Targets
from herder.registry import BadName, Event, Index, Query, Registration, ServiceKey, Watch
from herder.rpc import Method, Peer

log = logging.getLogger(__name__)

MAX_TTL_S = 3600.0
# At most this many registrations in one answer: a query as wide as /* otherwise held the
# manager's loop 60 to 80 ms at 10,000 services (heartbeats included), for anyone's asking.
DEFAULT_FIND_LIMIT = 1000
MAX_FIND_LIMIT = 10_000
MAX_METADATA_BYTES = 16 * 1024
SWEEP_MAX_S = 1.0


class InvalidRegistration(ValueError):
    """A registration's argument that breaks a rule; ``field`` names it (sent as ``data``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def registration_document(reg: Registration) -> dict[str, Any]:
    return {
        "id": reg.id,
        "key": str(reg.key),
        "url": reg.url,
        "relay": reg.relay,
        "metadata": reg.metadata,
        "owner": reg.owner,
        "registered_at": reg.registered_at,
        "expires_at": None if math.isinf(reg.expires_at) else reg.expires_at,
    }


class Services:
    """The registry of one manager: its index, its sweeper (``run``), and the link methods."""

    def __init__(
        self,
        auth_on: bool,
        targets: Targets | None = None,
        quota: ServiceQuota | None = None,
        quota_overrides: Mapping[str, ServiceQuota] | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        store: RegistryStore | None = None,
    ) -> None:
        self.index = Index()
        self.store = store  # the database's rows (None: memory only)
        self._drops: dict[str, float] = {}  # id -> registered_at: a closed link's, to delete
        self._keeping: set[asyncio.Task[None]] = set()  # registrations being written (shielded)
        self._dropped = asyncio.Event()
        self._clock = clock  # TTLs and the sweeper's waits
        self._auth_on = auth_on
        self._quota = quota or ServiceQuota()
        self._quota_overrides = dict(quota_overrides or {})
        self._targets = targets  # what the proxy will reach, checked at registration too
        self._by_peer: dict[int, set[str]] = {}  # the ids each link registered with ttl_s 0
        self._held_by: dict[str, int] = {}  # id -> the link that keeps it now (ttl_s 0)
        self._changed = asyncio.Event()
        self.relay = Relay(self.index)

    def methods(self) -> list[Method]:
        table: dict[str, Callable[..., Any]] = {
            "register_service": self.register,
            "renew_service": self.renew,
            "deregister_service": self.deregister,
            "find_services": self.find,
        }
        return [Method.of(func, name=name) for name, func in table.items()]

    # -- link methods ---------------------------------------------------------------------

    async def register(
        self,
        key: str,
        url: str | None,
        metadata: dict[str, Any] | None = None,
        ttl_s: float = 0,
        *,
        peer: Peer,
    ) -> dict[str, Any]:
        """Register (or replace, by id) one instance; its document.

        Without a URL (``None`` or ``""``), a relayed instance: this link serves its calls.
        """
        service_key = ServiceKey.parse(key)
        who = getattr(peer.principal, "name", None)
        role = getattr(peer.principal, "role", None)
        if self._auth_on and role != "admin" and service_key.username != who:
            raise PermissionError(f"{who!r} may register only under /{who}/..., not {key!r}")
        relayed = url is None or url == ""
        if not isinstance(ttl_s, int | float) or not 0 <= ttl_s <= MAX_TTL_S:
            raise InvalidRegistration(
                "ttl_s", f"ttl_s must be from 0 (the link keeps it) to {MAX_TTL_S:g}, not {ttl_s!r}"
            )
        if relayed:
            url = self._check_relayed(service_key.id, ttl_s, peer)
        elif not isinstance(url, str) or not url.startswith(("http://", "https://", "ws://", "wss://")):
            raise InvalidRegistration(
                "url", f"url must be an http(s) or ws(s) URL, or null for a relayed service, not {url!r}"
            )
        elif self._targets is not None:  # the owner learns now what the proxy would refuse
            await self._targets.check_registration(url, role if self._auth_on else None)
        assert isinstance(url, str)
        document = dict(metadata or {})
        size = len(json.dumps(document, separators=(",", ":"), default=repr).encode())
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must stay under {MAX_METADATA_BYTES} bytes (as JSON), not {size}")
        existing = self.index.get(service_key.id)
        if existing is not None and self._auth_on and role != "admin" and existing.owner != who:
            raise PermissionError(f"the id {service_key.id!r} is another user's registration")
        if self._auth_on and role != "admin":
            self._check_quota(who or "anonymous", ttl_s, size, existing)
        now = self._clock.time()
        reg = Registration(
            key=service_key,
            url=url,
            owner=who or "anonymous",
            owner_role=role if self._auth_on else None,
            registered_at=now,
            expires_at=math.inf if ttl_s == 0 else now + ttl_s,
            metadata=document,
            metadata_bytes=size,
            relay=relayed,
        )
        if self.store is None:
            await self._keep(reg, peer)
        else:
            # Written to the end even if the link closes meanwhile (its handler cancelled),
            # so that the row and the index agree: ``_keep`` undoes what a closed link kept.
            keeping = asyncio.ensure_future(self._keep(reg, peer))
            self._keeping.add(keeping)
            keeping.add_done_callback(self._keeping.discard)
            await asyncio.shield(keeping)
        return registration_document(reg)

    async def _keep(self, reg: Registration, peer: Peer) -> None:
        """Store ``reg`` (the database first: if that fails, nothing changed) and index it."""
        held = math.isinf(reg.expires_at)
        if self.store is not None:
            await self.store.put(reg, self.store.manager_id if held else None)
            if held and peer.closed:  # the link went while the row was written
                await self.store.remove(reg.id, held=True, registered_at=reg.registered_at)
                return
        self.index.add(reg)
        if reg.relay:
            self.relay.bind(reg.id, peer)
        else:
            self.relay.unbind(reg.id)
        if held:
            first = id(peer) not in self._by_peer
            self._by_peer.setdefault(id(peer), set()).add(reg.id)
            self._held_by[reg.id] = id(peer)
            if first:
                peer.on_close.append(self._link_closed)
        else:
            self._held_by.pop(reg.id, None)
        self._changed.set()

    def _check_relayed(self, service_id: str, ttl_s: float, peer: Peer) -> str:
        """Refuse a relayed registration that breaks the relay's rules; its URL."""
        if ttl_s != 0:
            raise InvalidRegistration(
                "ttl_s", f"a relayed service (no url) is kept by its link: ttl_s must be 0, not {ttl_s!r}"
            )
        if not self.relay.room_for(peer, service_id):
            raise InvalidRegistration(
                "url",
                f"this link relays {self.relay.max_per_link} services already, the most one link may "
                "(deregister one, or give a url)",
            )
        return self.relay.url_of(service_id)

    async def renew(self, id: str, ttl_s: float, *, peer: Peer) -> dict[str, Any]:
        """Keep a registration alive ``ttl_s`` more seconds (its heartbeat).

        Only its owner (or an admin) may: otherwise anyone could keep another user's dead
        instance in the registry for ever, where clients would keep dialling it.
        """
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be above 0 and at most {MAX_TTL_S:g}, not {ttl_s!r}")
        who = getattr(peer.principal, "name", None)
        role = getattr(peer.principal, "role", None)
        relayed = self.index.get(id)
        if relayed is not None and relayed.relay:
            raise InvalidRegistration(
                "id", f"{id!r} is relayed: its link keeps it, there is nothing to renew"
            )
        if self._auth_on and role != "admin":
            current = self.index.get(id)
            if current is not None and current.owner != who:
                raise PermissionError(f"the registration {id!r} is another user's: only its owner renews it")
            setting, quota = self._quota_of(who or "anonymous")
            if ttl_s > quota.max_ttl_s:
                raise ValueError(f"ttl_s {ttl_s:g} is above {setting}.max_ttl_s ({quota.max_ttl_s:g})")
        now = self._clock.time()
        if self.store is not None:
            current = self.index.get(id)
            if current is None or not current.alive_at(now) or math.isinf(current.expires_at):
                raise LookupError(f"no live registration {id!r}: register again")
            if not await self.store.renew(id, now + ttl_s, now):
                raise LookupError(f"no live registration {id!r}: register again")
        due = self.index.next_expiry()
        reg = self.index.renew(id, now + ttl_s, now=now)
        if reg is None:
            raise LookupError(f"no live registration {id!r}: register again")
        if due is None or reg.expires_at < due:  # the sweeper's next wake-up moved earlier
            self._changed.set()
        return registration_document(reg)

    async def deregister(self, id: str, *, peer: Peer) -> None:
        reg = self.index.get(id)
        if reg is None:
            return
        who = getattr(peer.principal, "name", None)
        if self._auth_on and getattr(peer.principal, "role", None) != "admin" and reg.owner != who:
            raise PermissionError(f"the registration {id!r} is another user's")
        if self.store is not None:
            await self.store.remove(id)
        self.index.remove(id)
        self.relay.unbind(id)
        self._held_by.pop(id, None)

    def find(self, query: str, limit: int = DEFAULT_FIND_LIMIT) -> list[dict[str, Any]]:
        """The live registrations under a prefix of the key (at most ``limit``)."""
        return [registration_document(r) for r in self.query(Query.parse(query), limit)]

    def query(self, query: Query, limit: int = DEFAULT_FIND_LIMIT) -> list[Registration]:
        if not 1 <= limit <= MAX_FIND_LIMIT:
            raise ValueError(f"limit must be from 1 to {MAX_FIND_LIMIT}, not {limit!r}")
        return self.index.query(query, now=self._clock.time())[:limit]

    # -- quotas ---------------------------------------------------------------------------

    def _quota_of(self, user: str) -> tuple[str, ServiceQuota]:
        """The quota that applies to ``user``, and the setting it comes from (for errors)."""
        override = self._quota_overrides.get(user)
        if override is not None:
            return f"service_quota_overrides.{user}", override
        return "service_quota", self._quota

    def _check_quota(self, user: str, ttl_s: float, size: int, existing: Registration | None) -> None:
        """Refuse a registration past ``user``'s quota, naming the setting it would exceed.

        A replacement of one's own id counts as the new one instead of the old, so a
        service re-registering (new metadata, a link come back) is never refused for itself.
        """
        setting, quota = self._quota_of(user)
        if ttl_s > quota.max_ttl_s:
            raise ValueError(f"ttl_s {ttl_s:g} is above {setting}.max_ttl_s ({quota.max_ttl_s:g})")
        count, held = self.index.usage(user)
        if existing is not None and existing.owner == user:
            count -= 1
            held -= existing.metadata_bytes
        if count + 1 > quota.max_services:
            raise ValueError(
                f"{user!r} holds {count} registrations: {setting}.max_services ({quota.max_services}) "
                "allows no more (deregister some, or ask an admin for an override)"
            )
        if held + size > quota.max_metadata_bytes:
            raise ValueError(
                f"{user!r}'s registrations would hold {held + size} bytes of metadata: above "
                f"{setting}.max_metadata_bytes ({quota.max_metadata_bytes})"
            )

    def _link_closed(self, peer: Peer) -> None:
        """Drop what this link kept (not an id another link or a TTL has kept since)."""
        for service_id in self._by_peer.pop(id(peer), set()):
            if self._held_by.get(service_id) != id(peer):
                continue
            del self._held_by[service_id]
            reg = self.index.get(service_id)
            if reg is not None and math.isinf(reg.expires_at):
                self.index.remove(service_id)
                if self.store is not None:  # its row goes too (``run`` deletes it)
                    self._drops[service_id] = reg.registered_at
                    self._dropped.set()
            self.relay.unbind(service_id, peer)

    # -- following the database (``RegistryStore``'s ``Replica``) ---------------------------

    def reconcile(self, ids: Iterable[str], found: Sequence[Held], *, keep_held: bool = False) -> None:
        """Make each of ``ids`` in the index what its row in ``found`` says (absent: gone).

        Watches hear only real changes: a row equal to the index's entry is no event, one
        that differs only in its expiry is a renewal (no event either). A row that another
        manager's link (or a TTL) keeps now is no longer this manager's link's to drop.
        ``keep_held``: this manager was taken for dead, so the rows its open links keep
        were deleted by another, and are about to be written back: those stay.
        """
        me = None if self.store is None else self.store.manager_id
        by_id = {reg.id: (reg, holder) for reg, holder in found}
        for service_id in ids:
            local = self.index.get(service_id)
            row = by_id.get(service_id)
            if row is None:
                if keep_held and service_id in self._held_by:
                    continue
                if local is not None:
                    self.index.remove(service_id)
                self._forget_link(service_id)
                continue
            reg, holder = row
            if holder != me:
                self._forget_link(service_id)
            elif service_id not in self._held_by:
                continue  # this manager's link closed: its row is on its way out
            if local == reg:
                continue
            if local is not None and replace(local, expires_at=reg.expires_at) == reg:
                self.index.renew(service_id, reg.expires_at)
            else:
                self.index.add(reg)
        self._changed.set()  # the next expiry may have moved

    def renewed(self, renewals: Sequence[Sequence[Any]]) -> None:
        """Other managers' renewals ``[id, expires_at]``: applied to what has a TTL here."""
        for service_id, expires_at in renewals:
            local = self.index.get(service_id)
            if local is not None and not math.isinf(local.expires_at) and expires_at > local.expires_at:
                self.index.renew(service_id, float(expires_at))

    def local_ids(self) -> set[str]:
        return {reg.id for reg in self.index.query(Query.parse("/*"))}

    def held(self) -> list[Registration]:
        """What this manager's links keep (written back if the others took it for dead)."""
        found = (self.index.get(service_id) for service_id in self._held_by)
        return [reg for reg in found if reg is not None and math.isinf(reg.expires_at)]

    def held_ids(self) -> set[str]:
        return {reg.id for reg in self.held()}

    def _forget_link(self, service_id: str) -> None:
        """This manager's link no longer keeps ``service_id`` (another's does, or a TTL)."""
        if self._held_by.pop(service_id, None) is not None:
            self.relay.unbind(service_id)

    # -- expiry ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the database's registrations before serving (nothing without a store)."""
        if self.store is not None:
            await self.store.start(self)

    async def run(self) -> None:
        """Drop registrations whose TTL ran out, as soon as it runs out, until cancelled.

        With a store, also the store's heartbeat and LISTEN, and the rows of closed links.
        """
        if self.store is None:
            await self._sweep_memory()
            return
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.store.run(), name="registry-store")
            tg.create_task(self._sweep_database(), name="registry-sweeper")
            tg.create_task(self._drop_closed_links(), name="registry-links")

    async def _sweep_database(self) -> None:
        """At each due expiry, ``DELETE`` what ran out (one manager wins the rows).

        Entries due here that the delete did not return were renewed meanwhile, or
        deleted by another manager: their rows are read again. Anything still due after
        that has run out by this manager's clock and leaves the index (no spinning).
        """
        assert self.store is not None
        clock = self._clock
        while True:
            await self._until_expiry_due()
            now = clock.time()
            due = self.index.next_expiry()
            if due is None or due > now:  # woken by a change: nothing has run out yet
                continue
            overdue = self.index.overdue(now)
            try:
                expired = await self.store.expire(now)
                gone = {reg.id for reg in expired}
                rest = [i for i in overdue if i not in gone]
                found = await self.store.read(rest) if rest else []
            except Exception as error:  # the database away: the index decides until it is back
                log.warning("cannot expire registrations in the database: %s", error)
            else:
                for reg in expired:
                    log.info("service %s dropped out (its TTL ran out)", reg.key)
                self.reconcile([*gone, *rest], found)
            self.index.expire(now)

    async def _drop_closed_links(self) -> None:
        """Delete the rows of registrations whose link closed (the index dropped them at once)."""
        assert self.store is not None
        store = self.store
        while True:
            await self._dropped.wait()
            self._dropped.clear()
            drops, self._drops = self._drops, {}
            results = await asyncio.gather(
                *(store.remove(i, held=True, registered_at=at) for i, at in drops.items()),
                return_exceptions=True,
            )
            failed = {
                i: at for (i, at), r in zip(drops.items(), results, strict=True) if isinstance(r, Exception)
            }
            if failed:  # the database away: tried again in a moment (the others still see them)
                log.warning("cannot delete %d registrations of closed links yet: %s", len(failed), results[0])
                self._drops = failed | self._drops
                await asyncio.sleep(SWEEP_MAX_S)
                self._dropped.set()

    async def _until_expiry_due(self) -> None:
        """Wait until the earliest TTL runs out, a change moves it, or ``SWEEP_MAX_S`` passes."""
        due = self.index.next_expiry()
        clock = self._clock
        wait = SWEEP_MAX_S if due is None else max(0.0, min(SWEEP_MAX_S, due - clock.time()))
        self._changed.clear()
        await wait_event(self._changed, wait, clock)

    async def _sweep_memory(self) -> None:
        clock = self._clock
        while True:
            await self._until_expiry_due()
            for reg in self.index.expire(clock.time()):
                log.info("service %s dropped out (its TTL ran out)", reg.key)

    # -- watching -------------------------------------------------------------------------

    def watch(self, query: Query) -> tuple[Watch, asyncio.Queue[Event]]:
        """A watch whose events arrive on a queue (bounded: a slow reader loses events)."""
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=1024)

        def deliver(event: Event) -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

        return self.index.watch(query, on_event=deliver), queue


__all__ = ["BadName", "InvalidRegistration", "Services", "registration_document"]
