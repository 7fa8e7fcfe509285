"""``WS /events``: the dashboard's live feed of workers and tasks, without polling from pages.

One hub in the manager's memory fans changes out to every subscriber (a browser tab).
Each subscriber has a bounded queue: one that falls behind (a slow link, a tab in the
background) is not allowed to grow the manager's memory: its queue is dropped and it is
sent ``{"type": "resync"}`` followed by a fresh snapshot, and it reloads what it shows.

Messages (JSON text frames), first a snapshot, then changes as they happen::

    {"type": "snapshot", "workers": [worker, ...]}
    {"type": "worker", "worker": worker}     # registered, online/offline, figures, slots
    {"type": "task", "task": task}           # GET /tasks's document, with "progress"
    {"type": "task_deleted", "id": id}       # DELETE /tasks/{id}, on any manager
    {"type": "resync"}                       # then a snapshot; reload the tasks shown
    {"type": "progress", "progress": {id: percent}}  # the answer to a page's question

A page may ask ``{"type": "progress", "ids": [...]}`` (the tasks it loaded with
``GET /tasks``, whose documents say nothing of their items).

A task is ``GET /tasks``'s document with ``progress`` (``store.progress``: percent of its
frames done, from its items; None for a task without items).
A worker is ``GET /workers``'s document with ``slots_used``, ``last_seen``, its figures
(``update_frequent``, ``update_less_frequent``) and ``history``, its recent 1-minute load
averages, one per heartbeat (the sparkline), which pages extend from later events.

Where changes come from, so that every path is covered, including other managers on
one PostgreSQL database and the routes that change tasks directly:

* tasks: the database is the truth. A pass reads the tasks whose ``updated_at`` moved
  since the last pass (index ``ix_tasks_updated``), looking a few seconds back for rows
  committed late, and sends those whose ``updated_at`` differs from what it sent. Every
  round of writes (``Writes.on_round``) wakes it, at most ``MIN_PASS_S`` apart; it also
  runs every ``TICK_S`` for what changes without a round (pause, cancel, the lease keeper).
* deletions: a deleted task leaves no row to read, so ``DELETE /tasks/{id}`` tells the
  hub itself (``deleted``) after its commit, and, on PostgreSQL, every other manager's
  (#17): ``announce_deleted`` sends ``NOTIFY herder_tasks`` in the delete's transaction
  (delivered at its commit, never for a delete rolled back), which each manager hears on
  the registry's LISTEN connection (``heard_deleted``; ``on_deleted_elsewhere`` ends the
  task's log streams there). A NOTIFY sent while a manager's
  LISTEN connection was away is lost: its tabs learn of it at their next reload.
* workers: a pass every ``TICK_S`` reads them (online/offline is a matter of time), and
  each heartbeat (``Writes.on_beat``) adds a sample to the worker's history at once.
* passes run only while someone watches; history is kept always (a few floats a worker).

Credentials: the front door checks the token when the stream opens (a browser offers
it as the subprotocol ``herder.bearer.<token>``); a user gets only their own tasks. The
stream cannot see its token again later, so when the manager learns of a revoked key,
every stream is closed (code 4001): pages reconnect with their token, and a revoked
one is refused at the door.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text

from herder.manager.models import MAX_ID
from herder.manager.states import ACTIVE
from herder.manager.store.progress import progress_of
from herder.manager.store.tables import Task, Worker, WorkItem
from herder.principals import viewer_of

if TYPE_CHECKING:
    from fastapi import FastAPI, WebSocket

    from herder.manager.server import ManagerRuntime
    from herder.manager.store.heartbeats import Beat

log = logging.getLogger(__name__)

PATH = "/events"
QUEUE_SIZE = 2000  # events a subscriber may be behind before it must resync
TICK_S = 1.0  # a pass at least this often while someone watches
MIN_PASS_S = 0.25  # and at most this often, however many rounds wake it
LOOKBACK_S = 5.0  # rows committed this late after their updated_at are still seen
MAX_TASKS_PER_PASS = 2000  # more changed at once: everyone resyncs instead
HISTORY = 60  # load samples kept per worker
DELETED_KEPT = 1000  # deleted task ids remembered, so a pass that read one just before is not sent
MAX_ASKED = 100  # task ids a page may ask the progress of at once
DELETIONS_CHANNEL = "herder_tasks"  # deletions told to every manager's tabs (PostgreSQL)
REVOKED_CLOSE = 4001  # the close code that says: reconnect (your key may be revoked)

_RESYNC: dict[str, Any] = {"type": "resync"}
_CLOSE: dict[str, Any] = {"type": "close"}


class Subscriber:
    """One stream's queue, bounded; ``viewer`` is whose tasks it may see (None: all)."""

    def __init__(self, viewer: str | None, size: int = QUEUE_SIZE) -> None:
        self.viewer = viewer
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(size + 1)  # room for the marker
        self._size = size
        self.behind = False

    def offer(self, event: dict[str, Any]) -> None:
        """Queue ``event``; past the bound, drop everything queued and ask for a resync."""
        if self.behind:
            return
        if self.queue.qsize() >= self._size:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.behind = True
            event = _RESYNC
        self.queue.put_nowait(event)

    def may_see(self, task: dict[str, Any]) -> bool:
        return self.viewer is None or task.get("owner") == self.viewer


class Events:
    """The hub and its feed: a component of the manager (``run``) and the route's handler."""

    def __init__(self, runtime: ManagerRuntime) -> None:
        self._runtime = runtime
        self._subscribers: set[Subscriber] = set()
        self._wake = asyncio.Event()
        self.workers: dict[int, dict[str, Any]] = {}  # the last documents sent, by id
        self._history: dict[int, deque[float]] = {}
        self._sent: dict[int, float] = {}  # task id → the updated_at last sent
        self._cursor: float | None = None  # tasks changed after this were not read yet
        self._revoked: frozenset[str] | None = None
        self._workers_read_at = -TICK_S  # time.monotonic() of the last read of the workers
        self._deleted: deque[int] = deque(maxlen=DELETED_KEPT)  # recently deleted task ids
        # Told of a deletion made through another manager (the runtime: the output's readers).
        self.on_deleted_elsewhere: Callable[[int], None] | None = None

    # -- hooks -----------------------------------------------------------------------------

    def beat(self, beat: Beat) -> None:
        """A heartbeat (``Writes.on_beat``): a load sample for the worker's sparkline."""
        load = beat.figures.get("update_frequent", {}).get("load_average", {}).get("1min")
        if isinstance(load, int | float):
            self._history.setdefault(beat.worker_id, deque(maxlen=HISTORY)).append(float(load))

    def deleted(self, task_id: int, owner: str | None) -> None:
        """A task was deleted (``DELETE /tasks/{id}``, after its commit): tell every tab
        that may see it. Its row is gone, so no pass would; a pass that read it just
        before the deletion does not send it after (``_deleted``)."""
        self._deleted.append(task_id)
        self._sent.pop(task_id, None)
        self._publish({"type": "task_deleted", "id": task_id}, {"owner": owner})

    async def announce_deleted(self, db: Any, task_id: int, owner: str | None) -> None:
        """Tell the other managers' tabs of a deletion, at the commit of ``db``'s transaction
        (the delete's); nothing on SQLite, where one manager runs."""
        if db.get_bind().dialect.name == "postgresql":
            payload = json.dumps({"m": self._runtime.manager_id, "id": task_id, "owner": owner})
            notify = text("SELECT pg_notify(:channel, :payload)")
            await db.execute(notify, {"channel": DELETIONS_CHANNEL, "payload": payload})

    def heard_deleted(self, payload: str | None) -> None:
        """A NOTIFY on ``DELETIONS_CHANNEL``: another manager deleted a task (None: the
        LISTEN connection came back; what it missed is not known)."""
        if payload is None:
            return
        try:
            message = json.loads(payload)
            origin, task_id, owner = message["m"], int(message["id"]), message["owner"]
        except (ValueError, TypeError, KeyError) as error:
            log.warning("a deletion notification that cannot be read (%s): %.80r", error, payload)
            return
        if origin != self._runtime.manager_id:  # this manager's own: told already
            self.deleted(task_id, owner if isinstance(owner, str) else None)
            if self.on_deleted_elsewhere is not None:
                self.on_deleted_elsewhere(task_id)

    def changed(self) -> None:
        """A round of writes was committed (``Writes.on_round``): tasks may have changed."""
        if self._subscribers:
            self._wake.set()

    # -- the feed --------------------------------------------------------------------------

    async def run(self) -> None:
        """Pass after pass while someone watches, until cancelled (a component)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            # Always, so that a stream opened just before a revocation is closed by it too.
            self._check_revocations()
            if not self._subscribers:  # what is read next starts afresh
                self._cursor = None
                self._sent.clear()
                continue
            try:
                await self._pass_tasks()
                if time.monotonic() - self._workers_read_at >= TICK_S:
                    await self._pass_workers()
            except Exception:  # the database is away for a moment: the next pass tries again
                log.exception("the dashboard's feed could not read the database")
            await asyncio.sleep(MIN_PASS_S)

    def _publish(self, event: dict[str, Any], task: dict[str, Any] | None = None) -> None:
        for subscriber in self._subscribers:
            if task is None or subscriber.may_see(task):
                subscriber.offer(event)

    def _check_revocations(self) -> None:
        authority = self._runtime.authority
        if authority is None:
            return
        revoked = frozenset(authority.revoked_ids())
        if self._revoked is not None and revoked != self._revoked:
            for subscriber in self._subscribers:
                subscriber.behind = False
                subscriber.offer(_CLOSE)
        self._revoked = revoked

    async def _pass_tasks(self) -> None:
        from herder.manager.api import task_document

        now = time.time()
        if self._cursor is None:
            self._cursor = now  # pages load what is there; the feed sends what changes after
        since = self._cursor - LOOKBACK_S
        async with self._runtime.transaction() as db:
            query = select(Task).where(Task.updated_at > since).order_by(Task.updated_at)
            tasks = (await db.scalars(query.limit(MAX_TASKS_PER_PASS + 1))).all()
            docs = [task_document(t) for t in tasks if self._sent.get(t.id) != t.updated_at]
            done = await progress_of(db, [doc["id"] for doc in docs]) if docs else {}
        for doc in docs:
            doc["progress"] = done.get(doc["id"])
        if len(tasks) > MAX_TASKS_PER_PASS:  # a flood: cheaper for pages to reload a page
            for subscriber in self._subscribers:
                subscriber.offer(_RESYNC)
            self._cursor = now
            self._sent.clear()
            return
        gone = set(self._deleted)  # deleted while the pass read: not sent again
        for doc in docs:
            if doc["id"] in gone:
                continue
            self._sent[doc["id"]] = doc["updated_at"]
            self._publish({"type": "task", "task": doc}, doc)
            self._cursor = max(self._cursor, doc["updated_at"])
        horizon = self._cursor - LOOKBACK_S
        self._sent = {i: at for i, at in self._sent.items() if at > horizon}

    async def _pass_workers(self) -> None:
        """Read every worker; send those whose document changed."""
        self._workers_read_at = time.monotonic()
        for worker_id, doc in (await self._read_workers()).items():
            before = self.workers.get(worker_id)
            self.workers[worker_id] = doc
            if before != doc:
                self._publish({"type": "worker", "worker": doc})

    async def _read_workers(self) -> dict[int, dict[str, Any]]:
        from herder.manager.api import worker_summary

        offline_after_s = self._runtime.config.offline_after_s
        held_query = (
            select(WorkItem.worker_id, func.count(), func.min(WorkItem.task_id))
            .where(WorkItem.status.in_(ACTIVE), WorkItem.worker_id.is_not(None))
            .group_by(WorkItem.worker_id)
        )
        async with self._runtime.transaction() as db:
            held = {w: (n, task) for w, n, task in (await db.execute(held_query)).all()}
            workers = (await db.execute(select(*Worker.__table__.c).order_by(Worker.id))).all()
            docs = {}
            for worker in workers:  # rows, not ORM objects: a fleet of 1,000 is read in a few ms
                used, task = held.get(worker.id, (0, None))
                doc = worker_summary(worker, task, offline_after_s)
                doc.update(
                    slots_used=used,
                    last_seen=worker.last_seen,
                    update_frequent=worker.update_frequent,
                    update_less_frequent=worker.update_less_frequent,
                )
                docs[worker.id] = doc
        return docs

    def _snapshot(self) -> dict[str, Any]:
        workers = [
            {**doc, "history": list(self._history.get(worker_id, ()))}
            for worker_id, doc in sorted(self.workers.items())
        ]
        return {"type": "snapshot", "workers": workers}

    # -- the route -------------------------------------------------------------------------

    async def serve(self, ws: WebSocket) -> None:
        """``WS /events``: a snapshot of the workers, then every change this viewer may see."""
        from starlette.websockets import WebSocketDisconnect

        await ws.accept()
        if time.monotonic() - self._workers_read_at > TICK_S:  # not fresh: no pass ran lately
            await self._pass_workers()
        subscriber = Subscriber(viewer_of(ws.scope))
        self._subscribers.add(subscriber)  # no await between this and the snapshot: nothing is missed
        try:
            await ws.send_json(self._snapshot())
            await _first(self._send(ws, subscriber), self._receive(ws, subscriber))
        except (OSError, RuntimeError, WebSocketDisconnect):  # the page went while being sent to
            pass
        finally:
            self._subscribers.discard(subscriber)

    async def _receive(self, ws: WebSocket, subscriber: Subscriber) -> None:
        """What the page asks, until it goes: ``{"type": "progress", "ids": [...]}`` is
        answered ``{"type": "progress", "progress": {id: percent}}`` for the tasks of
        those it may see (the tasks a page loaded, whose progress ``GET /tasks`` lacks);
        anything else is ignored."""
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            ids = _asked_ids(message.get("text"))
            if not ids:
                continue
            async with self._runtime.transaction() as db:
                query = select(Task.id).where(Task.id.in_(ids))
                if subscriber.viewer is not None:
                    query = query.where(Task.owner == subscriber.viewer)
                visible = list((await db.scalars(query)).all())
                done = await progress_of(db, visible) if visible else {}
            subscriber.offer({"type": "progress", "progress": {str(i): done.get(i) for i in visible}})

    async def _send(self, ws: WebSocket, subscriber: Subscriber) -> None:
        while True:
            event = await subscriber.queue.get()
            if event is _CLOSE:
                await ws.close(REVOKED_CLOSE, "a key was revoked: connect again")
                return
            if event is _RESYNC:
                subscriber.behind = False
                await ws.send_json(_RESYNC)
                event = self._snapshot()
            await ws.send_json(event)


def _asked_ids(text: str | None) -> list[int]:
    """The task ids of a page's ``progress`` question (at most ``MAX_ASKED``); [] for
    anything else: a page's message is never trusted to be well formed."""
    try:
        asked = json.loads(text or "")
    except ValueError:
        return []
    if not isinstance(asked, dict) or asked.get("type") != "progress":
        return []
    ids = asked.get("ids")
    if not isinstance(ids, list) or len(ids) > MAX_ASKED:
        return []
    return [i for i in ids if type(i) is int and 0 < i <= MAX_ID]  # past INTEGER: no task


async def _first(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Run these until one returns (or fails), then cancel and await the others."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def install(app: FastAPI, events: Events) -> None:
    """Add ``WS /events`` to the manager's app (outside its OpenAPI, like ``/relay``)."""
    app.router.add_websocket_route(PATH, events.serve)


__all__ = ["Events", "Subscriber", "install"]
