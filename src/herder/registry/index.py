"""An in-memory index of registrations that answers prefix queries and feeds watches.

Storage is the manager's business (registrations are to outlive its restarts); this
index is what it asks "which instances of /alice/prod/math are alive?" many times a
second, so a query must cost what it returns, not what the registry holds:

* **A tree of the key's leading parts.** Registrations hang under
  username → environment → name → version → region → hostname, each level a dict, and
  the leaf holds them by id. A query walks only the branches its parts name: one dict
  look-up per fixed part, every child for a ``*`` or for parts the query stops short
  of. A version range is tested once per distinct version under a name (a handful), not
  once per instance.
* **Expiry by a heap** of ``(expires_at, sequence, id)``, so ``expire(now)`` pops only
  what is due. A renewal pushes a new entry and leaves the old one to be skipped (its
  sequence no longer current) rather than searching the heap; the heap is rebuilt when
  stale entries outnumber live ones.
* **Watches are plain objects** holding a bounded deque: the index stays synchronous
  and free of asyncio, and a server wraps a watch in whatever stream it serves.

Time is whatever finite float the caller passes as ``now`` (monotonic or wall clock, but
always the same one): a registration is alive while ``now < expires_at``; an
``expires_at`` of ``math.inf`` means "until removed", for a service whose open
connection is its heartbeat.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Final, Literal, NamedTuple

from herder.registry.names import FIELDS, VERSION_INDEX, WILDCARD, Query, ServiceKey, Version

_LEAF: Final = len(FIELDS) - 1
"""Depth of the nodes that hold registrations by id: one level per part before the id."""

DEFAULT_WATCH_BUFFER: Final = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """A service instance the registry knows: where to reach it and until when.

    Frozen, so that what a query hands out cannot change under its reader: a renewal
    makes a new ``Registration``. ``metadata`` is shared, not copied; treat it as
    read-only. ``owner`` is the user who registered it; whether that user may register
    under ``key.username`` is for the caller to decide, before ``Index.add``.
    """

    key: ServiceKey
    url: str
    owner: str
    registered_at: float
    expires_at: float = math.inf
    metadata: dict[str, Any] = field(default_factory=dict)
    # The owner's role when it registered ("user", "admin"; None without keys): what the
    # manager's proxy may reach for it depends on it.
    owner_role: str | None = None
    # The size of ``metadata`` as its owner sent it (JSON bytes), counted against the
    # owner's quota: the index keeps each owner's total (``Index.usage``).
    metadata_bytes: int = 0
    # Reached through the manager's relay (``url`` is the manager's ``/relay/<id>``): the
    # instance cannot listen (a browser tab), so calls travel over its own link.
    relay: bool = False

    @property
    def id(self) -> str:
        return self.key.id

    def alive_at(self, now: float) -> bool:
        return now < self.expires_at


EventKind = Literal["registered", "deregistered"]


class Event(NamedTuple):
    """What a watch receives: ``("registered", reg)`` or ``("deregistered", reg)``.

    ``registered`` means "this id now looks like this": a replacement that still matches
    the watch's query arrives as one ``registered`` event, with no ``deregistered`` before
    it, so a watcher keeping a map by id just overwrites.
    """

    kind: EventKind
    registration: Registration


class Watch:
    """The events of one query, buffered for a consumer that reads them later.

    The buffer is bounded: when the consumer falls ``maxlen`` events behind, the oldest
    are dropped and ``overflowed`` counts them, so that a stalled reader costs bounded
    memory and its server can tell it to start over (query, then watch again).
    ``on_event``, if given, is called with each event after it is buffered, for example
    to wake an asyncio task; it must not raise (if it does, the error reaches the caller
    of the index method that produced the event, after the index has changed and every
    watch has had its events).
    """

    def __init__(
        self,
        query: Query,
        *,
        unsubscribe: Callable[[Watch], None],
        maxlen: int = DEFAULT_WATCH_BUFFER,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        if maxlen < 1:
            raise ValueError(f"a watch buffers at least one event, not {maxlen}")
        self.query = query
        self.events: deque[Event] = deque(maxlen=maxlen)
        self.overflowed = 0
        self.on_event = on_event
        self.closed = False
        self._unsubscribe = unsubscribe

    def deliver(self, event: Event) -> None:
        """Buffer ``event`` (the index calls this for events that match the query)."""
        if self.closed:
            return
        if len(self.events) == self.events.maxlen:
            self.overflowed += 1
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def drain(self) -> list[Event]:
        """Every buffered event, oldest first, leaving the buffer empty."""
        events = list(self.events)
        self.events.clear()
        return events

    def close(self) -> None:
        """Stop receiving events; closing twice is harmless."""
        if not self.closed:
            self.closed = True
            self._unsubscribe(self)

    def __len__(self) -> int:
        return len(self.events)

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Node:
    """One level of the tree: children by the next part, or (at the leaf) registrations by id."""

    __slots__ = ("children", "registrations", "semver")

    def __init__(self, semver: Version | None = None) -> None:
        self.children: dict[str, _Node] = {}
        self.registrations: dict[str, Registration] = {}
        self.semver = semver  # set on version nodes, so ranges are tested once per version

    def is_empty(self) -> bool:
        return not self.children and not self.registrations


class Index:
    """Registrations by id and by key prefix, with expiry and watches. Not thread-safe.

    Every method that changes the index first changes it, then delivers the events to
    the watches whose query matches, so a watch's callback always sees the index as the
    event describes it.
    """

    def __init__(self) -> None:
        self._root = _Node()
        self._leaves: dict[str, _Node] = {}  # id -> the leaf holding it
        self._heap: list[tuple[float, int, str]] = []
        self._stamps: dict[str, int] = {}  # id -> sequence of its live heap entry
        self._sequence = itertools.count()
        self._watches: dict[str, dict[Watch, None]] = {}  # username or "*" -> watches
        self._usage: dict[str, tuple[int, int]] = {}  # owner -> (registrations, metadata bytes)

    # -- reading ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._leaves)

    def __contains__(self, id: object) -> bool:
        return id in self._leaves

    def get(self, id: str) -> Registration | None:
        leaf = self._leaves.get(id)
        return None if leaf is None else leaf.registrations[id]

    def query(self, q: Query, *, now: float | None = None) -> list[Registration]:
        """The registrations under ``q``; with ``now``, only those alive at ``now``.

        The order follows the tree (first registered first within each level), which is
        stable but not meaningful: callers that need an order sort.
        """
        found: list[Registration] = []
        self._walk(self._root, 0, q, found)
        if now is not None:
            return [r for r in found if now < r.expires_at]
        return found

    def _walk(self, node: _Node, index: int, q: Query, found: list[Registration]) -> None:
        if index == _LEAF:
            found.extend(_leaf_matches(node, q))
            return
        for child in _children(node, index, q):
            self._walk(child, index + 1, q, found)

    def usage(self, owner: str) -> tuple[int, int]:
        """How many registrations ``owner`` holds, and their metadata's bytes in all.

        Kept up to date by every path that adds or drops one (replacement, removal,
        expiry), so a quota check costs a dict look-up, not a walk.
        """
        return self._usage.get(owner, (0, 0))

    def next_expiry(self) -> float | None:
        """When the next registration is due to expire (``None``: none will), to sleep until."""
        self._drop_stale_heads()
        return self._heap[0][0] if self._heap else None

    def overdue(self, now: float) -> list[str]:
        """The ids whose ``expires_at <= now``, without removing them (earliest first).

        For a registry kept in a database, where whoever deletes the rows decides; costs
        a walk of the expiry heap, so call it only once ``next_expiry()`` is due.
        """
        due = [(at, id) for at, sequence, id in self._heap if at <= now and self._stamps.get(id) == sequence]
        return [id for _, id in sorted(due)]

    # -- changing -----------------------------------------------------------------------

    def add(self, registration: Registration) -> Registration | None:
        """Add ``registration``, replacing the one with the same id; returns the replaced one.

        A replacement may move the id to another key (a new version, say): watches of
        the old key's query hear ``deregistered``, those of the new one ``registered``.
        """
        old = self._detach(registration.id)
        self._attach(registration)
        self._publish([(old, registration)])
        return old

    def remove(self, id: str) -> Registration | None:
        """Remove the registration ``id``; returns it, or ``None`` if there was none."""
        old = self._detach(id)
        if old is not None:
            self._publish([(old, None)])
        return old

    def renew(self, id: str, expires_at: float, *, now: float | None = None) -> Registration | None:
        """Move ``id``'s expiry to ``expires_at`` (a heartbeat); ``None`` if ``id`` is unknown.

        With ``now``, a registration already expired at ``now`` is not brought back but
        removed (watches hear ``deregistered``) and ``None`` returned: a service that
        missed its TTL registers again, so that every ``registered`` a watcher saw is
        followed by one ``deregistered`` when the instance was, for a while, gone.
        """
        leaf = self._leaves.get(id)
        if leaf is None:
            return None
        current = leaf.registrations[id]
        if now is not None and not current.alive_at(now):
            self.remove(id)
            return None
        renewed = replace(current, expires_at=expires_at)
        leaf.registrations[id] = renewed
        self._schedule(renewed)
        return renewed

    def expire(self, now: float) -> list[Registration]:
        """Remove every registration whose ``expires_at <= now``; returns them, earliest first."""
        dropped: list[Registration] = []
        while self._heap and self._heap[0][0] <= now:
            _, sequence, id = heapq.heappop(self._heap)
            if self._stamps.get(id) == sequence:
                old = self._detach(id)
                assert old is not None  # a live stamp means the id is indexed
                dropped.append(old)
        self._publish([(r, None) for r in dropped])
        return dropped

    def watch(
        self,
        q: Query,
        *,
        maxlen: int = DEFAULT_WATCH_BUFFER,
        on_event: Callable[[Event], None] | None = None,
    ) -> Watch:
        """A ``Watch`` of the changes under ``q`` from now on (query first for the present)."""
        watch = Watch(q, unsubscribe=self._unwatch, maxlen=maxlen, on_event=on_event)
        self._watches.setdefault(q.parts[0], {})[watch] = None
        return watch

    def _unwatch(self, watch: Watch) -> None:
        bucket = self._watches.get(watch.query.parts[0], {})
        bucket.pop(watch, None)
        if not bucket:
            self._watches.pop(watch.query.parts[0], None)

    # -- the tree and the heap ----------------------------------------------------------

    def _attach(self, registration: Registration) -> None:
        key = registration.key
        node = self._root
        for index, part in enumerate(key.parts[:_LEAF]):
            child = node.children.get(part)
            if child is None:
                child = _Node(key.semver if index == VERSION_INDEX else None)
                node.children[part] = child
            node = child
        node.registrations[key.id] = registration
        self._leaves[key.id] = node
        self._count(registration, 1)
        self._schedule(registration)

    def _detach(self, id: str) -> Registration | None:
        """Take ``id`` out of the tree, pruning the branches it leaves empty."""
        leaf = self._leaves.pop(id, None)
        if leaf is None:
            return None
        self._stamps.pop(id, None)
        old = leaf.registrations.pop(id)
        self._count(old, -1)
        if leaf.is_empty():
            self._prune(old.key)
        return old

    def _count(self, registration: Registration, sign: int) -> None:
        count, size = self._usage.get(registration.owner, (0, 0))
        count += sign
        size += sign * registration.metadata_bytes
        if count:
            self._usage[registration.owner] = (count, size)
        else:
            self._usage.pop(registration.owner, None)

    def _prune(self, key: ServiceKey) -> None:
        path = [self._root]
        for part in key.parts[: _LEAF - 1]:
            path.append(path[-1].children[part])
        for depth in range(_LEAF - 1, -1, -1):
            parent = path[depth]
            child = parent.children[key.parts[depth]]
            if not child.is_empty():
                return
            del parent.children[key.parts[depth]]

    def _schedule(self, registration: Registration) -> None:
        if math.isinf(registration.expires_at):
            self._stamps.pop(registration.id, None)
            return
        sequence = next(self._sequence)
        self._stamps[registration.id] = sequence
        heapq.heappush(self._heap, (registration.expires_at, sequence, registration.id))
        if len(self._heap) > 2 * len(self._stamps) + 64:
            self._compact()

    def _compact(self) -> None:
        """Drop the entries that renewals and removals left behind."""
        self._heap = [e for e in self._heap if self._stamps.get(e[2]) == e[1]]
        heapq.heapify(self._heap)

    def _drop_stale_heads(self) -> None:
        while self._heap and self._stamps.get(self._heap[0][2]) != self._heap[0][1]:
            heapq.heappop(self._heap)

    # -- watches ------------------------------------------------------------------------

    def _publish(self, changes: Iterable[_Change]) -> None:
        """Tell each watch of the ``(old, new)`` changes it sees; raise callbacks' errors last.

        Per watch: ``new`` matching is ``registered``; else ``old`` matching is
        ``deregistered``; else the change is none of its business.
        """
        if not self._watches:
            return
        errors: list[Exception] = []
        for old, new in changes:
            for watch in self._watchers_of(old, new):
                try:
                    _tell(watch, old, new)
                except Exception as error:  # a callback's bug; the other watches still hear
                    errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup("watch callbacks failed", errors)

    def _watchers_of(self, *registrations: Registration | None) -> dict[Watch, None]:
        """The watches whose first part could match one of ``registrations``, in order."""
        found: dict[Watch, None] = {}
        for username in dict.fromkeys(r.key.username for r in registrations if r is not None):
            found.update(self._watches.get(username, {}))
        found.update(self._watches.get(WILDCARD, {}))
        return found


_Change = tuple[Registration | None, Registration | None]
"""``(old, new)``: an add is ``(None, new)``, a removal ``(old, None)``, a replacement both."""


def _tell(watch: Watch, old: Registration | None, new: Registration | None) -> None:
    if new is not None and watch.query.matches(new.key):
        watch.deliver(Event("registered", new))
    elif old is not None and watch.query.matches(old.key):
        watch.deliver(Event("deregistered", old))


def _children(node: _Node, index: int, q: Query) -> Iterable[_Node]:
    """The children of ``node`` (at part ``index``) that ``q`` may lead through."""
    if index >= q.depth:
        return node.children.values()
    if index == VERSION_INDEX:
        return [c for c in node.children.values() if c.semver is not None and q.accepts_version(c.semver)]
    wanted = q.parts[index]
    if wanted == WILDCARD:
        return node.children.values()
    child = node.children.get(wanted)
    return () if child is None else (child,)


def _leaf_matches(leaf: _Node, q: Query) -> Iterator[Registration]:
    """The registrations of ``leaf`` whose id ``q`` accepts."""
    if q.depth < len(FIELDS) or q.parts[-1] == WILDCARD:
        yield from leaf.registrations.values()
        return
    registration = leaf.registrations.get(q.parts[-1])
    if registration is not None:
        yield registration
