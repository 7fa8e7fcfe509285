"""A task's live output followed through any manager on one PostgreSQL (#17).

A work item's lines arrive at the manager holding its agent's link and are kept in that
manager's memory while the item is live (``output``). A reader of ``GET`` or ``WS
/tasks/{id}/log`` on another manager gets them through PostgreSQL, the one medium the
managers share, on demand (nothing crosses while nobody reads elsewhere):

* **follow**: a manager with readers for a live task sends ``NOTIFY herder_output``
  ``{"k": "f", "m": its id, "t": [[task, [items], snapshot wanted], ...]}``, renewed
  every ``RENEW_S`` while readers remain, and ``"k": "u"`` (unfollow) when the last
  leaves. The items named (up to ``MAX_NAMED_ITEMS``) are the task's live ones not held
  by the follower; a holder also forwards any item of the task it hands out later.
* **the holder** answers a new follow (or one asking) with a **snapshot**: what it keeps
  of those items (``"k": "l"``), then the items it holds with where their kept lines
  start (``"k": "c"``); then it forwards their new lines every ``FLUSH_S``. A follow not
  renewed for ``FOLLOW_TTL_S`` expires there (a follower that died costs nothing).
* **bounds**: each payload stays under PostgreSQL's 8000 bytes (lines longer than
  ``LINE_CHARS`` are cut); what one task forwards is bounded by ``RATE_BYTES_S``
  (``BURST_BYTES`` at once), a snapshot by ``SNAPSHOT_BYTES``: a flood of output cannot
  swamp the database. Lines beyond are not forwarded; the reader is told by a marker
  line (stream ``herder``) where they are missing.

Every line carries its number within its item (``seq``: the lines the item wrote before
it, as ``output.Output`` counts them, kept or dropped), so readers put the pieces together
exactly: snapshot and forwarded lines that overlap are sent once (``Follow`` gathers both
for ``SNAPSHOT_WAIT_S`` before handing them on, in order), a gap becomes a marker, and at
the task's end the stream adds what the database stored after the last line it sent.

On SQLite (one manager) nothing here runs: ``enabled`` is False and ``follow`` answers None.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from sqlalchemy import text

from herder.manager.output import LiveLine
from herder.manager.states import ACTIVE
from herder.manager.store.logs import Line

log = logging.getLogger(__name__)

CHANNEL = "herder_output"
RENEW_S = 2.0  # a follower says it still reads this often
FOLLOW_TTL_S = 6.0  # a holder forgets a follow not renewed for this long (three renewals)
FLUSH_S = 0.1  # a holder forwards new lines in batches this often at most
SNAPSHOT_WAIT_S = 1.5  # a reader waits this long for the holders' snapshots
PAYLOAD_BYTES = 7000  # under PostgreSQL's 8000-byte NOTIFY payload
LINE_CHARS = 1000  # a longer line is cut for a reader on another manager (whole in the DB)
RATE_BYTES_S = 128 * 1024  # forwarded per task and second, at most ...
BURST_BYTES = 256 * 1024  # ... after this many at once
SNAPSHOT_BYTES = 512 * 1024  # a snapshot holds the newest lines up to this size
MAX_NAMED_ITEMS = 500  # items a follow names (a hint; the task's items are forwarded anyway)
RETRY_S = 1.0  # after a failed send (the database away)
MARKER_STREAM = "herder"  # the stream of the lines that say lines are missing

Entry = tuple[int, int, int, str, str]
"""A line on the wire: (item, seq, attempt, stream, text)."""


def marker(item_id: int, attempt: int, missing: int, seq: int) -> LiveLine:
    """The line that stands for ``missing`` lines of an item a reader does not get."""
    text = f"[{missing} lines not shown here: more output than is sent to a reader]"
    return (item_id, attempt, MARKER_STREAM, text, seq)


class LineOrder:
    """What a log stream sends of each item: every line once, in order, a marker for a gap.

    Lines reach a stream from the memory, the database, this manager's live output and
    other managers' (snapshots and forwarded lines, which may overlap): their ``seq``
    says which were sent already and which were never to come.
    """

    def __init__(self) -> None:
        self._next: dict[int, int] = {}  # item -> the seq of its next line

    def accept(self, line: LiveLine) -> list[LiveLine]:
        """What to send for ``line``: nothing (sent already), it, or a marker and it."""
        item_id, attempt, _, _, seq = line
        expected = self._next.get(item_id)
        if expected is not None and seq < expected:
            return []
        self._next[item_id] = seq + 1
        if expected is not None and seq > expected:
            return [marker(item_id, attempt, seq - expected, seq - 1), line]
        return [line]


class HeldOutput(Protocol):
    """The output this manager keeps of live items (``output.Output``)."""

    def kept(self, item_id: int) -> tuple[int, list[Line]]:
        """The seq of the first kept line, and the kept lines."""
        ...

    def items_of(self, task_id: int) -> list[int]: ...

    def holds(self, item_id: int) -> bool:
        """Whether this manager keeps the item's output (its agent is linked here)."""
        ...


class Transactions(Protocol):
    """A transaction on the manager's database (``ManagerRuntime.transaction``)."""

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...


class Follow:
    """One reader's follow of a task's output held on other managers.

    Lines (snapshots and forwarded ones) are gathered by item and seq until every item
    in ``expected`` was answered for, or ``SNAPSHOT_WAIT_S`` passed; then handed to
    ``sink`` in order, and from then on as they come (the reader drops what it has).
    """

    def __init__(self, task_id: int, expected: set[int], sink: Callable[[LiveLine], None]) -> None:
        self.task_id = task_id
        self.expected = expected
        self._sink = sink
        self._gathered: dict[int, dict[int, tuple[int, str, str]]] = {}
        self._kept_from: dict[int, int] = {}  # item -> seq of the first line its holder keeps
        self._covered: set[int] = set()
        self.settled = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    def gather(self) -> None:
        """Gather again (a new follow, or the LISTEN connection back: snapshots asked)."""
        self.settled.clear()
        self._covered.clear()
        if self._timer is not None:
            self._timer.cancel()
        if not self.expected:
            self.settle()
            return
        self._timer = asyncio.get_running_loop().call_later(SNAPSHOT_WAIT_S, self.settle)

    def lines(self, entries: Iterable[Entry]) -> None:
        if self.settled.is_set():
            for item_id, seq, attempt, stream, line in entries:
                self._sink((item_id, attempt, stream, line, seq))
            return
        for item_id, seq, attempt, stream, line in entries:
            self._gathered.setdefault(item_id, {})[seq] = (attempt, stream, line)

    def covered(self, held: Iterable[Sequence[int]]) -> None:
        """A holder's snapshot is complete: it keeps these items' lines from these seqs."""
        for item_id, kept_from in held:
            self._covered.add(item_id)
            self._kept_from[item_id] = kept_from
        if not self.settled.is_set() and self.expected <= self._covered:
            self.settle()

    def settle(self) -> None:
        """Hand on what was gathered, in order; lines go through at once from now on."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.settled.is_set():
            return
        gathered, self._gathered = self._gathered, {}
        for item_id in sorted(gathered):
            lines = gathered[item_id]
            first = min(lines)
            kept_from = self._kept_from.get(item_id, first)
            if first > kept_from:  # the snapshot's bound left the oldest out
                self._sink(marker(item_id, lines[first][0], first - kept_from, first - 1))
            for seq in sorted(lines):
                attempt, stream, line = lines[seq]
                self._sink((item_id, attempt, stream, line, seq))
        self.settled.set()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Bucket:
    """Bytes a task may forward: ``RATE_BYTES_S``, up to ``BURST_BYTES`` saved.

    Once empty it refuses until a quarter of the burst is saved again: a flood then
    crosses in a few large pieces, with a few markers between, not one per flush.
    """

    def __init__(self) -> None:
        self.tokens = float(BURST_BYTES)
        self.at = time.monotonic()
        self.empty = False

    def take(self, size: int) -> bool:
        now = time.monotonic()
        self.tokens = min(BURST_BYTES, self.tokens + (now - self.at) * RATE_BYTES_S)
        self.at = now
        if self.empty and self.tokens < BURST_BYTES / 4:
            return False
        self.empty = self.tokens < size
        if self.empty:
            return False
        self.tokens -= size
        return True


class OutputShare:
    """This manager's side of output shared between managers: holder and follower both."""

    def __init__(self, output: HeldOutput, db: Transactions, manager_id: str, *, enabled: bool) -> None:
        self._output = output
        self._db = db
        self._manager_id = manager_id
        self.enabled = enabled
        # As a holder: task -> follower -> when its follow expires (time.monotonic()).
        self._followers: dict[int, dict[str, float]] = {}
        self._named: dict[int, int] = {}  # item a follow named -> its task
        self._pending: dict[int, list[Entry]] = {}  # task -> lines to forward at the next flush
        self._buckets: dict[int, _Bucket] = {}
        # As a follower: task -> the follows of this manager's readers.
        self._follows: dict[int, set[Follow]] = {}
        self._asked: list[tuple[int, list[int], bool]] = []  # follows to announce
        self._dropped_tasks: list[int] = []  # unfollows to announce
        self._outbox: list[str] = []
        self._wake = asyncio.Event()
        # Since start, for /metrics-like checks and tests.
        self.forwarded_lines = 0
        self.dropped_lines = 0

    # -- as a follower ---------------------------------------------------------------------

    def follow(
        self, task_id: int, live: Iterable[tuple[int, bool]], sink: Callable[[LiveLine], None]
    ) -> Follow | None:
        """Follow a task's output held elsewhere for a reader; None on SQLite.

        ``live``: the task's live items, each with whether it runs (assigned or running):
        a running one not held here is waited for (``SNAPSHOT_WAIT_S`` at most).
        """
        if not self.enabled:
            return None
        elsewhere = [(i, running) for i, running in live if not self._output.holds(i)]
        follow = Follow(task_id, {i for i, running in elsewhere if running}, sink)
        self._follows.setdefault(task_id, set()).add(follow)
        follow.gather()
        self._asked.append((task_id, [i for i, _ in elsewhere][:MAX_NAMED_ITEMS], True))
        self._wake.set()
        return follow

    def unfollow(self, follow: Follow | None) -> None:
        if follow is None:
            return
        follow.close()
        follows = self._follows.get(follow.task_id)
        if follows is None:
            return
        follows.discard(follow)
        if not follows:
            del self._follows[follow.task_id]
            self._dropped_tasks.append(follow.task_id)
            self._wake.set()

    async def gather(self, task_id: int, live: Iterable[tuple[int, bool]]) -> dict[int, list[Line]]:
        """What the holders keep of a task's live items (``GET /tasks/{id}/log``), by item.

        Waits ``SNAPSHOT_WAIT_S`` at most; an item whose holder did not answer by then
        (gone, or cut off) has none. A marker stands for lines a bound left out.
        """
        found: dict[int, list[Line]] = {}
        live = list(live)
        if not any(waited and not self._output.holds(i) for i, waited in live):
            return found  # nothing runs elsewhere: not worth a NOTIFY to every manager
        follow = self.follow(task_id, live, lambda e: found.setdefault(e[0], []).append((e[1], e[2], e[3])))
        if follow is None:
            return found
        try:
            if follow.expected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(follow.settled.wait(), SNAPSHOT_WAIT_S)
            follow.settle()
        finally:
            self.unfollow(follow)
        return found

    # -- as a holder (``output.Output`` hands every batch of lines here) --------------------

    def lines(
        self, task_id: int | None, item_id: int, seq: int, attempt: int, batch: Sequence[Sequence[str]]
    ) -> None:
        """Lines an agent linked here sent: queued for the managers that follow their task."""
        if not self._followers:
            return
        task = task_id if task_id is not None else self._named.get(item_id)
        if task is None or not self._alive_followers(task):
            return
        bucket = self._buckets.setdefault(task, _Bucket())
        pending = self._pending.setdefault(task, [])
        for n, (stream, line) in enumerate(batch):
            cut = _cut(line)
            if bucket.take(len(cut.encode()) + 32):
                pending.append((item_id, seq + n, attempt, stream, cut))
            else:
                self.dropped_lines += 1
        if pending:
            self._wake.set()

    def _alive_followers(self, task_id: int) -> list[str]:
        followers = self._followers.get(task_id)
        if not followers:
            return []
        now = time.monotonic()
        for follower in [f for f, until in followers.items() if until < now]:
            del followers[follower]
        if not followers:
            self._forget(task_id)
            return []
        return list(followers)

    def _forget(self, task_id: int) -> None:
        self._followers.pop(task_id, None)
        self._pending.pop(task_id, None)
        self._buckets.pop(task_id, None)
        for item_id in [i for i, t in self._named.items() if t == task_id]:
            del self._named[item_id]

    def _snapshot(self, task_id: int, named: Sequence[int], follower: str) -> None:
        """Queue what is kept of the task's items held here for ``follower``: lines, then
        the items (``"c"``: that the snapshot is complete)."""
        self._flush_task(task_id)  # lines pending now go before: the snapshot has them too
        items = sorted(set(self._output.items_of(task_id)) | {i for i in named if self._output.holds(i)})
        budget = SNAPSHOT_BYTES
        entries: list[Entry] = []
        held: list[list[int]] = []
        for item_id in items:
            first, lines = self._output.kept(item_id)
            held.append([item_id, first])
            chosen: list[Entry] = []
            for n in range(len(lines) - 1, -1, -1):  # the newest first, while the budget lasts
                attempt, stream, line = lines[n]
                cut = _cut(line)
                budget -= len(cut.encode()) + 32
                if budget < 0:
                    break
                chosen.append((item_id, first + n, attempt, stream, cut))
            entries.extend(reversed(chosen))
        head = {"k": "l", "m": self._manager_id, "to": [follower], "t": task_id}
        self._outbox.extend(_payloads(head, "l", entries))
        self._outbox.extend(_payloads({**head, "k": "c"}, "c", held))
        self._wake.set()

    def _flush_task(self, task_id: int) -> None:
        entries = self._pending.pop(task_id, [])
        followers = self._alive_followers(task_id) if entries else []
        if followers:
            head = {"k": "l", "m": self._manager_id, "to": followers, "t": task_id}
            self._outbox.extend(_payloads(head, "l", entries))
            self.forwarded_lines += len(entries)

    # -- NOTIFYs heard ------------------------------------------------------------------------

    def heard(self, payload: str | None) -> None:
        """A NOTIFY on ``CHANNEL``, or None: the LISTEN connection came back (what was sent
        meanwhile is lost: every follow asks for snapshots again)."""
        if payload is None:
            for task_id, follows in self._follows.items():
                for follow in follows:
                    follow.gather()
                self._asked.append((task_id, [], True))
            self._wake.set()
            return
        try:
            message = json.loads(payload)
            sender = message["m"]
            kind = message["k"]
        except (ValueError, TypeError, KeyError) as error:
            log.warning("an output notification that cannot be read (%s): %.80r", error, payload)
            return
        if sender == self._manager_id:
            return
        try:
            if kind == "f":
                self._followed(sender, message["t"])
            elif kind == "u":
                for task_id in message["t"]:
                    self._followers.get(int(task_id), {}).pop(sender, None)
            elif self._manager_id in message.get("to", ()):
                self._answered(kind, message)
        except (ValueError, TypeError, KeyError) as error:
            log.warning("an output notification that cannot be read (%s): %.80r", error, payload)

    def _answered(self, kind: str, message: dict[str, Any]) -> None:
        """A holder's lines (``l``) or the end of its snapshot (``c``), for this manager."""
        for follow in self._follows.get(int(message["t"]), set()):
            if kind == "l":
                follow.lines(tuple(e) for e in message["l"])
            elif kind == "c":
                follow.covered(message["c"])

    def _followed(self, follower: str, follows: list[Any]) -> None:
        until = time.monotonic() + FOLLOW_TTL_S
        for task_id, named, wanted in follows:
            followers = self._followers.setdefault(int(task_id), {})
            new = follower not in followers or followers[follower] < time.monotonic()
            followers[follower] = until
            for item_id in named:
                self._named[int(item_id)] = int(task_id)
            if wanted or new:
                self._snapshot(int(task_id), [int(i) for i in named], follower)

    # -- sending ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Send follows, renewals and forwarded lines, until cancelled (a component)."""
        if not self.enabled:
            await asyncio.Event().wait()  # nothing to share on one manager
        renew_at = time.monotonic() + RENEW_S
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, renew_at - time.monotonic()))
            self._wake.clear()
            if time.monotonic() >= renew_at:
                renew_at = time.monotonic() + RENEW_S
                self._asked.extend((task_id, [], False) for task_id in self._follows)
                for task_id in list(self._followers):
                    self._alive_followers(task_id)  # expired follows go
            self._queue_follows()
            for task_id in list(self._pending):
                self._flush_task(task_id)
            outbox, self._outbox = self._outbox, []
            if outbox:
                try:
                    await self._send(outbox)
                except Exception as error:  # lost: readers see markers, or ask again
                    log.warning("cannot send output to other managers: %s", error)
                    await asyncio.sleep(RETRY_S)
            await asyncio.sleep(FLUSH_S)  # what comes meanwhile shares the next batch

    def _queue_follows(self) -> None:
        asked, self._asked = self._asked, []
        dropped, self._dropped_tasks = self._dropped_tasks, []
        dropped = [t for t in dropped if t not in self._follows]  # followed again since
        head = {"k": "f", "m": self._manager_id}
        self._outbox.extend(_payloads(head, "t", [[t, items, int(w)] for t, items, w in asked]))
        self._outbox.extend(_payloads({**head, "k": "u"}, "t", dropped))

    async def _send(self, payloads: list[str]) -> None:
        async with self._db.transaction() as db:
            for payload in payloads:
                await db.execute(
                    text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
                )


def waited_for(status: str, attempt: int) -> bool:
    """Whether a reader waits for a live item's snapshot from its holder: it runs, or it
    ran before (queued again, its lines kept where it ran)."""
    return status in ACTIVE or attempt > 0


def _cut(line: str) -> str:
    return line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + "…"


def _payloads(head: dict[str, Any], key: str, values: Sequence[Any]) -> list[str]:
    """``head`` with ``values`` under ``key``, split into payloads under ``PAYLOAD_BYTES``."""
    base = len(_json({**head, key: []}).encode())
    out: list[str] = []
    current: list[Any] = []
    size = base
    for value in values:
        width = len(_json(value).encode()) + 1  # and its comma
        if current and size + width > PAYLOAD_BYTES:
            out.append(_json({**head, key: current}))
            current, size = [], base
        current.append(value)
        size += width
    if current:
        out.append(_json({**head, key: current}))
    return out


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


__all__ = ["CHANNEL", "Follow", "LineOrder", "OutputShare", "marker", "waited_for"]
