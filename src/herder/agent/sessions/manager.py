"""Sessions: one isolated host process per session, reached through the agent (Inedo seed).

The agent stays a light listener. A client opens a session for a product over the wire
protocol (``meta.open_session``); the agent starts a host process for it
(``agent/sessions/host.py``) with a socketpair as its only channel, and from then on relays:
a call whose target is the session's id (or its product's name, when one session of
that product is attached to the connection) goes to the host, and its answer comes
back; events the host emits (a launched program's output...) go to the client as
``session.event`` notifications, in order, numbered.

A session outlives its client's connection:

* ``detach_session`` (the client leaves on purpose): the session waits
  ``idle_timeout_s`` for a client, then ends;
* an unexpected disconnect: it waits ``reconnect_window_s``;
* meanwhile the host's events are buffered (at most ``buffer_events``; past that the
  oldest are dropped and the client is told how many, first thing on resume);
* ``resume_session(id, resume_token)`` on a new connection gets it back, buffered
  events first.

A session ends by ``close_session`` (the host closes every file and stops every
process it launched, then exits), by its timeout, by the agent stopping, or by its host
crashing; in every case whatever the host left running is killed (its process group,
then anything carrying the session's environment marker), and a client still attached
gets a ``session.ended`` event saying why. An ended session's id answers, for a while,
with the reason it ended.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from herder.agent.config import AgentConfig, SessionsConfig
from herder.agent.processes import TRACKER, procs
from herder.agent.sessions.channel import ChannelTransport, open_channel
from herder.agent.sessions.host import CONFINED_VAR, FD_VAR, SECRET_VAR, SESSION_TARGET, SESSION_VAR
from herder.agent.sessions.relay import RawRelay
from herder.rpc import ConnectionLost, Method, Peer, Registry, RemoteCallback, RemoteError
from herder.taskgroup import OwnedTaskGroup
from herder.wire import DEFAULT_MAX_FRAME_SIZE, ErrorCode, Welcome, codec_for, decode_hello, encode_welcome

log = logging.getLogger(__name__)

EVENT_METHOD = "session.event"
# Ended sessions remembered so that a late resume learns why it failed.
ENDED_KEPT = 1000
REAP_TICK_S = 1.0
# At the agent's stop, how long past close_grace_s a session may take to end.
SHUTDOWN_SLACK_S = 5.0
REAP_AFTER_KILL_S = 5.0  # a SIGKILLed host is gone in milliseconds; this only bounds the wait
SESSION_ID_BYTES = 8
CHANNEL_BUFFER_BYTES = 4 * 1024 * 1024
# What a host process inherits of the agent's environment: enough to run Python and
# programs, in the user's locale; nothing else (no secrets, no agent configuration).
HOST_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "SHELL", "VIRTUAL_ENV")


class SessionError(RemoteError):
    """A session request that cannot be served; reaches the client with its code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(code.value, message, "SessionError")


class HostProcess:
    """The agent's end of one host process: the child, its channel, its exit."""

    def __init__(self, popen: subprocess.Popen[bytes], peer: Peer, exited: asyncio.Future[int]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.peer = peer
        self.exited = exited
        self.runner: asyncio.Task[None] | None = None


class Spare:
    """A session prepared ahead of its open: its id, directory and host, started for one product.

    Everything a host gets is the session's own and fixed before any client asks (the
    id, and from it the directory, the environment and the markers; a one-time secret;
    the agent-wide ``[sessions]`` settings): ``open_session`` takes no other parameter.
    So a spare is a session whose host was started early, never a host shared: it is
    handed to exactly one ``open_session``, and the next spare is a new process.
    """

    def __init__(self, session: Session, task: asyncio.Task[None]) -> None:
        self.session = session
        self.task = task  # starts its host and asks it to describe itself


class Session:
    """One session: its host process, its client (if any), its event buffer."""

    def __init__(self, session_id: str, product: str, root: Path, config: SessionsConfig) -> None:
        self.id = session_id
        self.product = product
        self.root = root
        self.resume_token = secrets.token_urlsafe(24)
        self.created_at = time.time()
        self.state = "starting"
        self.client: Peer | None = None
        self.host: HostProcess | None = None
        self.description: dict[str, Any] = {}
        self.ended_reason: str | None = None
        self.ended = asyncio.Event()
        self.pump_task: asyncio.Task[None] | None = None
        self.ender: asyncio.Task[None] | None = None  # ending it (SessionManager.end)
        self.end_error: Exception | None = None  # what ending it raised, for end()'s callers
        self.spare_task: asyncio.Task[None] | None = None  # its host's start, when it was a spare
        self.waiting_as_spare = False  # a spare no session took yet: its host starts nothing
        self._config = config
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self._dropped = 0
        self._seq = 0
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()  # nothing left to deliver (or nobody to deliver it to)
        self.idle.set()
        self.detached_at: float | None = None
        self.wait_s = config.idle_timeout_s

    # -- events -------------------------------------------------------------------------

    def push_event(self, kind: str, data: Any) -> None:
        """An event from the host: numbered, buffered, delivered in order."""
        self._seq += 1
        if len(self._events) >= self._config.buffer_events:
            self._events.popleft()
            self._dropped += 1
        self._events.append({"session": self.id, "seq": self._seq, "kind": kind, "data": data})
        self.idle.clear()
        self._wake.set()

    async def pump(self) -> None:
        """Deliver buffered events whenever a client is attached; runs for the session's life."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (client := self.client) is not None and (self._events or self._dropped):
                if self._dropped:
                    event = {
                        "session": self.id,
                        "seq": None,
                        "kind": "overflow",
                        "data": {"dropped": self._dropped},
                    }
                    dropped, self._dropped = self._dropped, 0
                else:
                    event = self._events.popleft()
                    dropped = 0
                try:
                    await client.notify(EVENT_METHOD, event)
                except ConnectionLost:
                    if dropped:
                        self._dropped += dropped
                    else:
                        self._events.appendleft(event)
                    break
            self.idle.set()

    @property
    def buffered(self) -> int:
        return len(self._events)

    # -- clients ------------------------------------------------------------------------

    def attach(self, client: Peer) -> None:
        self.client = client
        self.detached_at = None
        self._wake.set()

    def detach(self, wait_s: float) -> None:
        self.client = None
        self.detached_at = time.monotonic()
        self.wait_s = wait_s

    def expired(self, now: float) -> bool:
        return self.detached_at is not None and now - self.detached_at >= self.wait_s

    def document(self, *, with_token: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "product": self.product,
            "state": self.state,
            "attached": self.client is not None,
            "created_at": self.created_at,
            "pid": self.host.pid if self.host is not None else None,
            "root": str(self.root),
            "buffered": self.buffered,
            "extensions": self.description.get("extensions", {}),
        }
        if with_token:
            doc["resume_token"] = self.resume_token
        return doc


class SessionManager:
    """Every session of one agent, and the relay between clients and host processes."""

    def __init__(self, config: AgentConfig, agent_id: str) -> None:
        self._config = config.sessions
        self._base_env = {k: os.environ[k] for k in HOST_ENV if k in os.environ}
        self._agent_id = agent_id
        self._root = config.data_dir / "sessions"
        self.sessions: dict[str, Session] = {}
        self._ended: collections.OrderedDict[str, str] = collections.OrderedDict()
        # run()'s task group: every task the sessions need (pumps, host channels, their
        # watchers, enders); shutdown() stops it once the sessions have ended.
        self._tasks = OwnedTaskGroup("sessions")
        # Every host process not yet reaped, by the future that reaps it: the agent's stop
        # reaps what is left, so no host outlives it unreaped (its Popen would then warn).
        self._unreaped: dict[asyncio.Future[int], subprocess.Popen[bytes]] = {}
        self._watched: set[Peer] = set()
        self._closing = False
        # One host started ahead for the product last opened (``spare_host``): see _take_spare.
        self._spare: Spare | None = None
        # Calls to sessions passed on as bytes (relay.py); forward() serves the others.
        self.relay = RawRelay(self)
        self.end_wait_s = self._config.close_grace_s + 5  # for a relayed call to learn why its session ended
        self.shutdown_slack_s = SHUTDOWN_SLACK_S
        # Called when a session opens, is attached or detached, closes or ends (the
        # agent's WS /events): what ``documents()`` answers has changed.
        self.watchers: list[Callable[[], None]] = []

    def _changed(self) -> None:
        for watcher in self.watchers:
            watcher()

    # -- life -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Own every task of the sessions, and end those whose client stayed away too long.

        Runs until cancelled. Once ``shutdown()`` has ended every session, what is left
        (pumps, host channels) is cancelled and awaited here; the reaper runs on until
        run() itself is cancelled.
        """
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._reap_expired(), name="sessions:reaper")
            await self._tasks.run()

    async def _reap_expired(self) -> None:
        """End sessions whose client stayed away too long, until cancelled."""
        cfg = self._config
        tick = min(REAP_TICK_S, cfg.idle_timeout_s / 4, cfg.reconnect_window_s / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for session in [s for s in self.sessions.values() if s.state == "open" and s.expired(now)]:
                waited = f"{session.wait_s:g} s"
                self._ender(session, f"no client came back within {waited}", True)

    async def shutdown(self) -> None:
        """End every session gracefully (the agent is stopping), within a bound.

        A session gets ``close_grace_s`` and some slack (``SHUTDOWN_SLACK_S``) to end, however
        it got there (a close already under way is waited for, not restarted); past that its
        end is cut short, which kills what it left and marks it ended: no session holds the
        agent's stop.
        """
        self._closing = True
        await self._discard_spare()
        enders = [
            ender
            for s in list(self.sessions.values())
            if (ender := self._ender(s, "the agent stopped", True)) is not None
        ]
        if enders:
            _, late = await asyncio.wait(enders, timeout=self._config.close_grace_s + self.shutdown_slack_s)
            for task in late:
                log.warning("%s: still under way at the agent's stop; cut short", task.get_name())
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._tasks.stop()  # what is left (pumps, host channels) is cancelled
        await self._reap_hosts()

    async def _reap_hosts(self) -> None:
        """Kill and reap any host process still unreaped (a start that failed, an end cut short)."""
        for exited, popen in list(self._unreaped.items()):
            procs.signal_group(popen.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(exited), REAP_AFTER_KILL_S)
            if not exited.done():  # its wait was lost: reap it here, after SIGKILL it is quick
                exited.cancel()
                with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                    await asyncio.to_thread(popen.wait, REAP_AFTER_KILL_S)
            self._unreaped.pop(exited, None)

    def spawn_quietly(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` in run()'s task group if it runs; else close it unstarted (the agent is stopping)."""
        if self._tasks.spawn(coro, name) is None:
            coro.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` in run()'s task group; its failure is logged, never spread to the others.

        Raises:
            SessionError: run() is not running (the agent is stopping).
        """
        task = self._tasks.spawn(coro, name)
        if task is None:
            raise SessionError(ErrorCode.APPLICATION_ERROR, "the agent is stopping")
        return task

    # -- meta methods ---------------------------------------------------------------------

    async def open(self, product: str, client: Peer) -> dict[str, Any]:
        """Start a host process for ``product`` and attach the session to ``client``."""
        if self._closing:
            raise SessionError(ErrorCode.APPLICATION_ERROR, "the agent is stopping")
        if not isinstance(product, str) or not product.replace("-", "").replace("_", "").isalnum():
            raise SessionError(
                ErrorCode.INVALID_PARAMS, f"product must be a name like 'shell', not {product!r}"
            )
        if len(self.sessions) >= self._config.max_sessions:
            raise SessionError(
                ErrorCode.OVERLOADED, f"{self._config.max_sessions} sessions are open (sessions.max_sessions)"
            )
        session = self._take_spare(product)
        spare_task = None
        if session is not None:
            spare_task = session.spare_task
            session.created_at = time.time()
            self._prepare_spare(product)  # the next one starts now, beside this one's last steps
        else:
            session = self._new_session(product)
        session_id = session.id
        self.sessions[session_id] = session
        self._changed()
        try:
            if spare_task is not None:
                await asyncio.shield(spare_task)
            else:
                await self._launch(session)
            if session.ender is not None:  # its host died while it opened
                raise SessionError(ErrorCode.APPLICATION_ERROR, str(session.ended_reason))
        except BaseException as exc:
            if spare_task is not None and not spare_task.done():
                spare_task.cancel()  # its start kills the host it began
                await asyncio.wait({spare_task})
            reason = str(exc) if isinstance(exc, SessionError) else f"the host did not start: {exc!r}"
            # The end is the manager's task: this one may be cancelled (the client left while it opened).
            await self.end(session, reason, graceful=False)
            with contextlib.suppress(OSError):
                session.root.rmdir()  # nothing was ever done in it
            raise
        assert session.host is not None
        session.state = "open"
        session.pump_task = self._spawn(session.pump(), f"session-pump-{session_id}")
        self._attach(session, client)  # tells the watchers
        log.info("session %s (%s) opened, host pid %d", session_id, product, session.host.pid)
        self._prepare_spare(product)
        return session.document(with_token=True)

    def _new_session(self, product: str) -> Session:
        """A session's id and directory (mode 0700), nothing started yet."""
        session_id = secrets.token_hex(SESSION_ID_BYTES)
        root = self._root / session_id
        root.mkdir(parents=True, mode=0o700)
        return Session(session_id, product, root, self._config)

    async def _launch(self, session: Session) -> None:
        """Start the session's host and learn what it serves."""
        session.host = await self._start_host(session)
        session.description = await session.host.peer.call("describe", target=SESSION_TARGET)

    # -- the spare host -------------------------------------------------------------------

    def _take_spare(self, product: str) -> Session | None:
        """The spare session for ``product``, taken (never again handed out); None if none fits.

        A spare still starting is taken too: its start is under way, sooner done than a
        new one. One whose host has died, or that was made for another product, is
        discarded.
        """
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        session = spare.session
        alive = session.state == "starting" and not (
            spare.task.done() and (spare.task.cancelled() or spare.task.exception() is not None)
        )
        host = session.host
        if host is not None and (host.exited.done() or (host.runner is not None and host.runner.done())):
            alive = False
        if alive and session.product == product:
            session.spare_task = spare.task
            session.waiting_as_spare = False
            if host is not None:
                TRACKER.taken(host.pid)
            return session
        self._spawn(self._drop_spare(spare), f"drop-spare-{session.id}")
        return None

    def _prepare_spare(self, product: str) -> None:
        """Start the next spare host for ``product`` (the one just opened), if configured.

        At most one spare exists: made for the product last opened, replacing one made
        for another. Started only after a session of that product opened, so a product
        that does not load never gets one.
        """
        if not self._config.spare_host or self._closing or self._spare is not None:
            return
        try:
            session = self._new_session(product)
        except OSError as exc:
            log.warning("no spare host for %r: %s", product, exc)
            return
        session.waiting_as_spare = True
        try:
            task = self._spawn(self._launch(session), f"spare-host-{session.id}")
        except SessionError:  # the agent is stopping
            with contextlib.suppress(OSError):
                session.root.rmdir()
            return
        self._spare = Spare(session, task)

    @property
    def spare(self) -> tuple[str, str, int] | None:
        """The spare ready to be taken: (product, session id, host pid); None if none is ready."""
        spare = self._spare
        if spare is None or not spare.task.done() or spare.session.host is None:
            return None
        return spare.session.product, spare.session.id, spare.session.host.pid

    async def _discard_spare(self) -> None:
        """The agent is stopping: the spare host goes, with its (empty) directory."""
        spare, self._spare = self._spare, None
        if spare is not None:
            await self._drop_spare(spare)

    async def _drop_spare(self, spare: Spare) -> None:
        """Stop a spare that no session took: kill its host, sweep its marker, remove its traces."""
        session = spare.session
        if not spare.task.done():
            spare.task.cancel()  # a host still starting is killed by its start's cleanup
        await asyncio.wait({spare.task})
        host = session.host
        session.state = "ended"
        if host is not None:
            procs.signal_group(host.pid, signal.SIGKILL)
            await host.peer.close("a spare host, never used")
            await asyncio.to_thread(procs.sweep, procs.UNIT_MARKER, self._marker(session))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(host.exited), REAP_AFTER_KILL_S)
        with contextlib.suppress(OSError):
            session.root.rmdir()
        log_path = self._root / f"{session.id}.log"
        with contextlib.suppress(OSError):
            if log_path.stat().st_size == 0:
                log_path.unlink()

    def resume(self, session_id: str, resume_token: str, client: Peer) -> dict[str, Any]:
        """Attach a session to ``client`` again; its buffered events follow."""
        session = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None or session.state != "open":
            raise self._gone(session_id)
        if not isinstance(resume_token, str) or not hmac.compare_digest(
            resume_token.encode(), session.resume_token.encode()
        ):
            raise SessionError(ErrorCode.UNAUTHORIZED, f"wrong resume token for session {session_id}")
        previous = session.client
        if previous is not None and previous is not client:
            log.info("session %s taken over by a new connection", session_id)
        self._attach(session, client)
        return session.document(with_token=True)

    def detach(self, session_id: str, client: Peer) -> dict[str, Any]:
        """The client leaves on purpose: the session waits ``idle_timeout_s`` for a resume."""
        session = self._owned(session_id, client)
        if session.state != "open":
            raise self._gone(session_id)
        session.detach(self._config.idle_timeout_s)
        self._changed()
        return session.document()

    async def close(self, session_id: str, client: Peer) -> dict[str, Any]:
        """End the session gracefully: every handle closed, every process stopped."""
        session = self._owned(session_id, client)
        await self.end(session, "closed by its client")
        return session.document()

    def documents(self) -> list[dict[str, Any]]:
        return [s.document() for s in self.sessions.values()]

    # -- relaying -------------------------------------------------------------------------------

    async def forward(
        self, client: Peer, target: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """A client's call to a session: relayed to its host, the answer relayed back."""
        session = self._session_for(client, target)
        host = session.host
        assert host is not None
        try:
            return await host.peer.call_with(
                method,
                [_relayable(a) for a in args],
                {k: _relayable(v) for k, v in kwargs.items()},
                target=session.product,
            )
        except ConnectionLost:
            # The host went away mid-call: say why, once the session has ended.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.ended.wait(), self._config.close_grace_s + 5)
            raise self._gone(session.id) from None

    def relayable(self, client: Peer, target: str) -> Session | None:
        """The open session ``target`` names for ``client``, or None where forward() would refuse."""
        try:
            return self._session_for(client, target)
        except SessionError:
            return None

    def gone(self, session_id: str) -> SessionError:
        """What a call to a session that ended (or is ending) is answered."""
        return self._gone(session_id)

    def _session_for(self, client: Peer, target: str) -> Session:
        session = self.sessions.get(target)
        if session is None:
            mine = [s for s in self.sessions.values() if s.client is client and s.product == target]
            if len(mine) > 1:
                raise SessionError(
                    ErrorCode.UNKNOWN_TARGET,
                    f"{len(mine)} sessions of {target!r} are attached to this connection; "
                    "address one by its session id",
                )
            if not mine:
                if target in self._ended:
                    raise self._gone(target)
                raise SessionError(
                    ErrorCode.UNKNOWN_TARGET,
                    f"no session {target!r} here (open one with meta.open_session, or resume it)",
                )
            session = mine[0]
        if session.state != "open":
            raise self._gone(session.id)
        if session.client is not client:
            raise SessionError(
                ErrorCode.UNAUTHORIZED,
                f"session {session.id} is not attached to this connection; resume it with its token",
            )
        return session

    def _owned(self, session_id: str, client: Peer) -> Session:
        session = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None or (session.state != "open" and session.client is not client):
            # Not open and not this connection's: say what resume_session says (it is ending).
            raise self._gone(session_id)
        if session.client is not client:
            raise SessionError(
                ErrorCode.UNAUTHORIZED,
                f"session {session_id} is not attached to this connection; resume it with its token",
            )
        return session

    def _gone(self, session_id: Any) -> SessionError:
        ending = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if ending is not None and ending.state in ("closing", "ended"):
            return SessionError(
                ErrorCode.UNKNOWN_TARGET, f"session {session_id} is ending: {ending.ended_reason}"
            )
        reason = self._ended.get(session_id) if isinstance(session_id, str) else None
        if reason is not None:
            return SessionError(ErrorCode.UNKNOWN_TARGET, f"session {session_id} has ended: {reason}")
        return SessionError(
            ErrorCode.UNKNOWN_TARGET, f"no session {session_id!r} (never opened, or long gone)"
        )

    def _attach(self, session: Session, client: Peer) -> None:
        session.attach(client)
        self._changed()
        if client not in self._watched:
            self._watched.add(client)
            client.on_close.append(self._client_gone)
            self.relay.watch_client(client)

    def _client_gone(self, client: Peer) -> None:
        """A connection ended: its sessions wait for a resume (``reconnect_window_s``)."""
        self._watched.discard(client)
        self.relay.client_gone(client)
        for session in self.sessions.values():
            if session.client is client:
                session.detach(self._config.reconnect_window_s)
                log.info("session %s: client disconnected; kept for a resume", session.id)
                self._changed()

    # -- host processes ---------------------------------------------------------------------

    def _host_env(self, session: Session, fd: int, secret: str) -> dict[str, str]:
        env = dict(self._base_env)
        env.update(self._config.env)
        env.update(
            HOME=str(session.root),
            TMPDIR=str(session.root),
            PYTHONDONTWRITEBYTECODE="1",
            **{
                FD_VAR: str(fd),
                SECRET_VAR: secret,
                SESSION_VAR: session.id,
                CONFINED_VAR: "1" if self._config.confine_paths else "0",
                # Last, so that nothing configured can hide the session's processes
                # from the sweep that guarantees none survives it.
                procs.AGENT_MARKER: self._agent_id,
                procs.UNIT_MARKER: self._marker(session),
            },
        )
        return env

    def _marker(self, session: Session) -> str:
        return f"{self._agent_id}:session:{session.id}"

    def _spawn_host(
        self, session: Session, theirs: socket.socket, secret: str, log_path: Path
    ) -> subprocess.Popen[bytes]:
        """Start the host: its own group, its own directory, one descriptor (the channel)."""
        with open(log_path, "ab") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", "herder.agent.sessions.host", session.product],
                cwd=session.root,
                env=self._host_env(session, theirs.fileno(), secret),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                pass_fds=(theirs.fileno(),),
                close_fds=True,
                start_new_session=True,
            )

    async def _start_host(self, session: Session) -> HostProcess:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for end in (ours, theirs):  # files move in megabytes: the default ~200 KiB buffers stall them
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_BUFFER_BYTES)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CHANNEL_BUFFER_BYTES)
        secret = secrets.token_urlsafe(32)
        log_path = self._root / f"{session.id}.log"
        try:
            popen = self._spawn_host(session, theirs, secret, log_path)
        finally:
            theirs.close()
        child = procs.Child(popen=popen, pidfd=os.pidfd_open(popen.pid), stdout_fd=-1, stderr_fd=-1)
        if session.waiting_as_spare:
            TRACKER.idle(popen.pid)
        exited = asyncio.ensure_future(procs.wait_exit(child))
        self._unreaped[exited] = popen
        exited.add_done_callback(lambda done: self._unreaped.pop(done, None))
        transport: ChannelTransport | None = None
        try:
            transport = await open_channel(ours, DEFAULT_MAX_FRAME_SIZE)
            peer = await self._welcome(session, transport, secret, exited, log_path)
        except BaseException:
            procs.signal_group(popen.pid, signal.SIGKILL)
            if transport is not None:
                await transport.close()
            ours.close()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(exited), self._config.close_grace_s)
            raise
        host = HostProcess(popen, peer, exited)
        host.runner = self._spawn(peer.run(), f"session-host-{session.id}")
        self._spawn(self._watch(session, host), f"session-watch-{session.id}")
        return host

    async def _welcome(
        self,
        session: Session,
        transport: ChannelTransport,
        secret: str,
        exited: asyncio.Future[int],
        log_path: Path,
    ) -> Peer:
        """The agent's side of the handshake: the host must present the secret we gave it."""
        hello_payload = asyncio.ensure_future(transport.recv())
        try:
            waiting: set[asyncio.Future[Any]] = {hello_payload, exited}
            done, _ = await asyncio.wait(
                waiting,
                timeout=self._config.open_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if not hello_payload.done():
                hello_payload.cancel()
        if hello_payload in done and hello_payload.exception() is not None:
            # The channel closed before a hello: the host is dying; say why it died.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), self._config.close_grace_s)
            done = {exited} if exited.done() else set()
        if hello_payload not in done:
            if exited.done():
                raise SessionError(
                    ErrorCode.APPLICATION_ERROR,
                    f"the host process for {session.product!r} exited with code {exited.result()}: "
                    f"{_tail(log_path)}",
                )
            raise SessionError(
                ErrorCode.APPLICATION_ERROR,
                f"the host process for {session.product!r} did not start "
                f"within {self._config.open_timeout_s:g} s",
            )
        hello = decode_hello(hello_payload.result())
        if hello.token is None or not hmac.compare_digest(hello.token.encode(), secret.encode()):
            raise SessionError(ErrorCode.UNAUTHORIZED, "the host process presented a wrong secret")
        await transport.send(encode_welcome(Welcome(codec="msgpack", service={"name": "herder-agent"})))
        registry = Registry()

        def event(kind: str, data: Any) -> None:
            """An event for the session's client."""
            session.push_event(kind, data)

        registry.add(Method.of(event, auth=False), target=SESSION_TARGET)
        peer = Peer(
            transport,
            codec_for("msgpack"),
            registry=registry,
            info={"name": "herder-agent"},
            principal="host",
        )
        self.relay.watch_host(session, peer)
        return peer

    async def _watch(self, session: Session, host: HostProcess) -> None:
        """The host process ended or its channel closed: unless we asked, that is a crash."""
        assert host.runner is not None
        ends: set[asyncio.Future[Any]] = {host.exited, host.runner}
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        if session.state == "starting" and session.id not in self.sessions:
            # A spare no client took yet: the next open (or the agent's stop) drops it.
            log.warning("spare host %d for %r exited before any session took it", host.pid, session.product)
            return
        if session.state in ("open", "starting"):
            code = host.exited.result() if host.exited.done() else None
            how = f"exit code {code}" if code is not None else "its channel closed"
            log.warning("session %s: host process %d crashed (%s)", session.id, host.pid, how)
            self._ender(session, f"its host process crashed ({how})", False)

    async def end(self, session: Session, reason: str, *, graceful: bool = True) -> None:
        """End ``session`` and wait for it: close its host (gracefully if asked), kill what is left.

        The work runs in a task of the manager's, shared by every caller, and not in the
        caller's: a caller that goes away (the client that asked for the close dropped its
        connection, or cancelled its call) leaves the end to finish; a second ender waits
        for the first. Before, a cancelled close left the session ``closing`` for ever.

        Once run() has ended (the agent's stop is past), there is no task group left to
        run it in: the end then runs in the caller's task.
        """
        ender = self._ender(session, reason, graceful)
        if ender is None:
            await self._end(session, reason, graceful)
            return
        await asyncio.shield(ender)
        if session.end_error is not None:
            raise session.end_error

    def _ender(self, session: Session, reason: str, graceful: bool) -> asyncio.Task[None] | None:
        """The task that ends ``session``, in run()'s group: the first ender's reason wins.

        None if there is no ender and run()'s group is not running (then ``end()`` runs
        the end in its caller's task).
        """
        if session.ender is None:
            # At once, not when the task first runs: from now on nothing may resume it.
            session.state = "closing"
            session.ended_reason = reason
            self._changed()
            session.ender = self._tasks.spawn(
                self._end_logged(session, reason, graceful), f"end-session-{session.id}"
            )
        return session.ender

    async def _end_logged(self, session: Session, reason: str, graceful: bool) -> None:
        """``_end``, whose failure is logged and kept for ``end()`` (it must not cancel the group)."""
        try:
            await self._end(session, reason, graceful)
        except Exception as exc:
            log.error("ending a session failed", exc_info=exc)
            session.end_error = exc

    async def _end(self, session: Session, reason: str, graceful: bool) -> None:
        host = session.host
        grace = self._config.close_grace_s
        finished = False
        try:
            if host is not None:
                if graceful and not host.exited.done():
                    with contextlib.suppress(Exception):
                        await host.peer.call("close", target=SESSION_TARGET, timeout=grace)
                await host.peer.close(reason)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(host.exited), grace if graceful else 0.5)
                procs.signal_group(host.pid, signal.SIGKILL)
                await asyncio.to_thread(procs.sweep, procs.UNIT_MARKER, self._marker(session))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(host.exited), grace + 5)
            if session.client is not None:  # the host's last events (exits...) go out first
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(session.idle.wait(), grace)
            finished = True
        finally:
            if not finished and host is not None:
                # Cut short (the agent's stop ran out of time, or something failed):
                # nothing the session started may outlive it all the same.
                procs.signal_group(host.pid, signal.SIGKILL)
                procs.sweep(procs.UNIT_MARKER, self._marker(session))
            client = session.client
            self._mark_ended(session, reason)
        if client is not None:
            ended = {"session": session.id, "seq": None, "kind": "session.ended", "data": {"reason": reason}}
            with contextlib.suppress(ConnectionLost, TimeoutError):  # a stalled client holds nothing
                await asyncio.wait_for(client.notify(EVENT_METHOD, ended), grace)
        log.info("session %s ended: %s", session.id, reason)

    def _mark_ended(self, session: Session, reason: str) -> None:
        session.state = "ended"
        session.ended.set()
        if session.pump_task is not None:
            session.pump_task.cancel()
        self.sessions.pop(session.id, None)
        self._ended[session.id] = reason
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)
        self._changed()


def _relayable(value: Any) -> Any:
    """A client's callback, relayed: the host gets a callback of ours that calls it."""
    if isinstance(value, RemoteCallback):
        callback = value

        async def relay(*args: Any, **kwargs: Any) -> Any:
            return await callback(*args, **kwargs)

        return relay
    if isinstance(value, list):
        return [_relayable(v) for v in value]
    if isinstance(value, dict):
        return {k: _relayable(v) for k, v in value.items()}
    return value


def _tail(path: Path, limit: int = 600) -> str:
    """The end of a host's log, for an error message."""
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return "(no log)"
    return data.decode("utf-8", "replace").strip() or "(nothing logged)"
