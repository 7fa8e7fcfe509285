"""``WS /events`` on the agent: its processes and pools, live, for the agent's own page.

A browser showing an agent must not poll it. This stream sends a snapshot first (the
processes and pools, then the sessions if there are any), then a message each time one
changes:

    {"type": "snapshot", "processes": [status, ...], "pools": [pool, ...]}
    {"type": "sessions", "sessions": [session, ...]}   every session: after a snapshot
                          (none sent: there are none), and whenever one opens, is
                          attached or detached, or ends
    {"type": "process", "process": status}       created, or its state changed
    {"type": "process_deleted", "slug": slug}
    {"type": "pool", "pool": pool}               opened, instances, in flight, state, bounds
    {"type": "pool_deleted", "name": name}
    {"type": "resync"}                           fell behind: a fresh snapshot follows

Documents are those of ``GET /process-status/<slug>`` and ``GET /pools/<name>``, and
the sessions those of the wire protocol's ``meta.list_sessions`` (``docs/sessions.md``),
made
when they are sent (so they say what is true then), with links for the ``Host`` the
stream was opened with. A process another user owns is not sent, as it is not listed.
The sessions go whole (there are at most ``sessions.max_sessions``), to every reader, as
``meta.list_sessions`` answers every caller.

Why coalesced: a pool's in-flight count moves with every request. Each subscriber keeps
the set of things that changed since it last sent (a unit or a pool at most once), and
sends at most ``BATCHES_PER_S`` batches a second, so a busy pool costs a stream at most
that many documents a second, whatever its traffic. The set is bounded
(``PENDING_LIMIT``): a subscriber that cannot keep up loses it and gets ``resync`` and a
snapshot instead, so the agent's memory does not grow with a slow reader.

Credentials are the agent's front door's (``guard.py``), as for every route: a browser
offers its token as the subprotocol ``herder.bearer.<token>``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from herder.agent.api.pools import pool_document
from herder.agent.api.routes import _until_disconnect, base_url, status_document
from herder.principals import may_see

if TYPE_CHECKING:
    from herder.agent.processes.supervisor import Unit
    from herder.agent.router.pools import Pool
    from herder.agent.server import AgentRuntime

PENDING_LIMIT = 1000  # distinct changes waiting to be sent, per subscriber, before a resync
BATCHES_PER_S = 20
SESSIONS_KEY = ("sessions", "")  # every session goes in one message: one key for them all


class Subscriber:
    """One open stream: what changed since it last sent, in the order it changed."""

    def __init__(self, scope: MutableMapping[str, Any]) -> None:
        self.scope = scope
        self.pending: dict[tuple[str, str], Unit | Pool | None] = {}
        self.behind = False  # the pending set overflowed: resync
        self.wake = asyncio.Event()

    def push(self, key: tuple[str, str], thing: Unit | Pool | None) -> None:
        if not self.behind:
            if key in self.pending or len(self.pending) < PENDING_LIMIT:
                self.pending[key] = thing
            else:
                self.pending.clear()
                self.behind = True
        self.wake.set()


class EventHub:
    """The agent's subscribers, told of every change by the supervisor's and router's watchers."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self._runtime = runtime
        self.subscribers: set[Subscriber] = set()
        runtime.supervisor.watchers.append(self._process_changed)
        if runtime.sessions is not None:
            runtime.sessions.watchers.append(self._sessions_changed)
        self._router_watched = False

    def subscribe(self, scope: MutableMapping[str, Any]) -> Subscriber:
        router = self._runtime.router
        if router is not None and not self._router_watched:  # made after the routes
            router.watchers.append(self._pool_changed)
            self._router_watched = True
        sub = Subscriber(scope)
        self.subscribers.add(sub)
        return sub

    def _process_changed(self, unit: Unit) -> None:
        for sub in self.subscribers:
            if may_see(sub.scope, unit.spec.owner):
                sub.push(("process", unit.slug), unit)

    def _pool_changed(self, pool: Pool) -> None:
        for sub in self.subscribers:
            sub.push(("pool", pool.name), pool)

    def _sessions_changed(self) -> None:
        for sub in self.subscribers:
            sub.push(SESSIONS_KEY, None)

    def sessions(self) -> dict[str, Any]:
        """Every session, as ``meta.list_sessions`` answers."""
        sessions = self._runtime.sessions
        return {"type": "sessions", "sessions": sessions.documents() if sessions is not None else []}

    def snapshot(self, sub: Subscriber, base: str) -> dict[str, Any]:
        units = self._runtime.supervisor.units.values()
        router = self._runtime.router
        return {
            "type": "snapshot",
            "processes": [status_document(u, base) for u in units if may_see(sub.scope, u.spec.owner)],
            "pools": [pool_document(p, base) for p in (router.pools.values() if router else ())],
        }

    def message(self, key: tuple[str, str], thing: Any, base: str) -> dict[str, Any]:
        """What to send for ``thing`` now: its document, or that it is gone."""
        kind, name = key
        if key == SESSIONS_KEY:
            return self.sessions()
        if kind == "process":
            unit = self._runtime.supervisor.units.get(name)
            if unit is not None and unit is thing:
                return {"type": "process", "process": status_document(unit, base)}
            return {"type": "process_deleted", "slug": name}
        router = self._runtime.router
        pool = router.pools.get(name) if router is not None else None
        if pool is not None and pool is thing:
            return {"type": "pool", "pool": pool_document(pool, base)}
        return {"type": "pool_deleted", "name": name}


async def _send_snapshot(ws: WebSocket, hub: EventHub, sub: Subscriber, base: str) -> None:
    """The snapshot, and the sessions if there are any (a snapshot means none otherwise)."""
    await ws.send_text(json.dumps(hub.snapshot(sub, base)))
    sessions = hub.sessions()
    if sessions["sessions"]:
        await ws.send_text(json.dumps(sessions))


async def _send(ws: WebSocket, hub: EventHub, sub: Subscriber) -> None:
    base = base_url(ws)
    await _send_snapshot(ws, hub, sub, base)
    while True:
        await sub.wake.wait()
        sub.wake.clear()
        if sub.behind:
            sub.behind = False
            await ws.send_text('{"type": "resync"}')
            await _send_snapshot(ws, hub, sub, base)
            continue
        batch, sub.pending = sub.pending, {}
        for key, thing in batch.items():
            await ws.send_text(json.dumps(hub.message(key, thing, base)))
        await asyncio.sleep(1 / BATCHES_PER_S)  # what changes meanwhile goes in the next batch


def event_routes(runtime: AgentRuntime) -> APIRouter:
    """``WS /events``."""
    router = APIRouter()
    hub = EventHub(runtime)

    @router.websocket("/events")
    async def events(ws: WebSocket) -> None:
        """A snapshot of the processes and pools, then each change (see the module's doc)."""
        await ws.accept()
        sub = hub.subscribe(ws.scope)
        try:
            async with asyncio.TaskGroup() as tg:
                sender = tg.create_task(_send(ws, hub, sub))
                reader = tg.create_task(_until_disconnect(ws))
                reader.add_done_callback(lambda _: sender.cancel())
        except* (WebSocketDisconnect, OSError):
            pass
        finally:
            hub.subscribers.discard(sub)

    return router
