"""The Python SDK for an agent's sessions.

    from herder.client import Agent

    async with Agent("http://127.0.0.1:8010") as agent, agent.session("shell") as s:
        await s.fs.write("hello.txt", b"hi")
        print(await s.fs.read("hello.txt"))
        p = await s.proc.launch(["sh", "-c", "echo out; echo err >&2"])
        async for line in p.output:
            print(line.stream, line)
        print(await p.wait())

One ``Agent`` is one connection (WebSocket on the agent's port, or ``tcp://`` to its
``--protocol-port``), speaking MessagePack. A ``Session`` addresses its host process by
the session's id; ``s.fs.<method>(...)`` and ``s.proc.<method>(...)`` are calls to the
product's extensions (any extension works the same way: ``s.ext("name").method(...)``).

Events from the session (a program's output, its exit, an overflow report, the session
ending) arrive as ``session.event`` notifications and are routed here to the process
or session they concern. ``s.id`` and ``s.resume_token`` let another connection take
the session back with ``agent.resume(id, token)``, events buffered meanwhile first.

``ManagerClient`` (from ``herder.rpc``, the same one the CLI and the agent use) reaches a
manager: its URLs, and access tokens bought with a key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from herder.net import rpc_url
from herder.rpc import META, AccessToken, ManagerClient, Peer, TokenRefused, connect

EVENT_METHOD = "session.event"
# Events for programs nobody asked about yet (after a resume), kept per session.
MAX_UNCLAIMED_EVENTS = 100_000
# Every event of a session is also queued on ``Session.events``, the oldest dropped past this.
MAX_QUEUED_EVENTS = 10_000


class SessionEnded(Exception):
    """The session ended (closed, timed out, or its host process crashed)."""


class OutputLine(str):
    """One line of a program's output; ``stream`` is ``"stdout"`` or ``"stderr"``."""

    stream: str

    def __new__(cls, text: str, stream: str) -> OutputLine:
        line = super().__new__(cls, text)
        line.stream = stream
        return line


class RemoteProcess:
    """A program launched in a session: its output as it comes, and its exit code."""

    def __init__(self, session: Session, process_id: int, pid: int) -> None:
        self.session = session
        self.id = process_id
        self.pid = pid
        self._lines: asyncio.Queue[OutputLine | None] = asyncio.Queue()
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "proc.output":
            self._lines.put_nowait(OutputLine(str(data.get("line", "")), str(data.get("stream", "stdout"))))
        elif kind == "proc.exit":
            if not self._exit.done():
                self._exit.set_result(int(data.get("code", -1)))
            self._lines.put_nowait(None)

    def _ended(self, error: BaseException) -> None:
        if not self._exit.done():
            self._exit.set_exception(error)
            self._exit.exception()  # retrieved here: not everyone waits for it
        self._lines.put_nowait(None)

    @property
    def output(self) -> AsyncIterator[OutputLine]:
        """``async for line in p.output``: the program's lines until it ends."""
        return self.lines()

    async def lines(self) -> AsyncIterator[OutputLine]:
        """Every output line (stdout and stderr, in arrival order) until the program ends."""
        while (line := await self._lines.get()) is not None:
            yield line

    async def wait(self) -> int:
        """The exit code (negative: killed by that signal), once its output has arrived."""
        return await asyncio.shield(self._exit)

    async def kill(self, signal: str | int = "TERM") -> None:
        await self.session.call("proc.kill", self.id, signal)


class Extension:
    """Calls to one extension of a session: ``s.fs.read(path)`` is ``fs.read`` there."""

    def __init__(self, session: Session, name: str) -> None:
        self._session = session
        self._name = name

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._session.call(f"{self._name}.{method}", *args, **kwargs)

        call.__name__ = f"{self._name}.{method}"
        return call


class Proc(Extension):
    """``proc`` with ``launch`` returning a ``RemoteProcess``."""

    async def launch(self, argv: list[str], **options: Any) -> RemoteProcess:
        """Start a program in the session; its output streams to the result's ``output``."""
        info = await self._session.call("proc.launch", list(argv), **options)
        return self._session._process(int(info["id"]), int(info["pid"]))

    def get(self, process_id: int) -> RemoteProcess:
        """A program launched earlier (before a resume): its remaining output and exit."""
        return self._session._process(process_id, -1)


class Session:
    """A session on an agent: a host process serving one product for this client."""

    def __init__(self, agent: Agent, document: dict[str, Any]) -> None:
        self.agent = agent
        self.id: str = document["id"]
        self.resume_token: str = document["resume_token"]
        self.product: str = document["product"]
        self.extensions: dict[str, list[str]] = document.get("extensions", {})
        self.root: str = document.get("root", "")
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.dropped_events = 0
        # Every event, for products whose events the SDK does not know: {"seq", "kind", "data"}.
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._processes: dict[int, RemoteProcess] = {}
        self._unclaimed: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        self.fs = Extension(self, "fs")
        self.proc = Proc(self, "proc")

    def ext(self, name: str) -> Extension:
        """Any extension of the product by name."""
        return Extension(self, name)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` (``<extension>.<name>``) in the session's host process."""
        if self.ended.done():
            raise SessionEnded(f"session {self.id} has ended: {self.ended.result()}")
        return await self.agent.peer.call_with(method, list(args), kwargs, target=self.id)

    async def close(self) -> None:
        """End the session: its host closes every file and stops every program it launched."""
        if not self.ended.done():
            await self.agent.peer.call("close_session", self.id, target=META)
            self._end("closed by this client")

    async def detach(self) -> None:
        """Leave the session running; ``agent.resume(id, token)`` takes it back later."""
        await self.agent.peer.call("detach_session", self.id, target=META)
        self.agent._sessions.pop(self.id, None)

    def _process(self, process_id: int, pid: int) -> RemoteProcess:
        process = self._processes.get(process_id)
        if process is None:
            process = RemoteProcess(self, process_id, pid)
            self._processes[process_id] = process
            for kind, data in self._unclaimed.pop(process_id, []):
                process._event(kind, data)
        elif pid >= 0:
            process.pid = pid
        return process

    def _event(self, kind: str, data: dict[str, Any], seq: int | None = None) -> None:
        if self.events.qsize() >= MAX_QUEUED_EVENTS:
            self.events.get_nowait()
        self.events.put_nowait({"seq": seq, "kind": kind, "data": data})
        if kind.startswith("proc."):
            process_id = int(data.get("id", -1))
            process = self._processes.get(process_id)
            if process is not None:
                process._event(kind, data)
            elif sum(len(v) for v in self._unclaimed.values()) < MAX_UNCLAIMED_EVENTS:
                self._unclaimed.setdefault(process_id, []).append((kind, data))
        elif kind == "overflow":
            self.dropped_events += int(data.get("dropped", 0))
        elif kind == "session.ended":
            self._end(str(data.get("reason", "ended")))

    def _end(self, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)
        error = SessionEnded(f"session {self.id} has ended: {reason}")
        for process in self._processes.values():
            process._ended(error)
        self.agent._sessions.pop(self.id, None)


class Agent:
    """A connection to an agent's wire protocol."""

    def __init__(self, url: str, *, token: str | None = None) -> None:
        """``url``: the agent's ``http://host:port`` (WebSocket ``/rpc`` on it), a ``ws://``
        URL, or ``tcp://host:port`` (its ``--protocol-port``): see ``herder.net.rpc_url``."""
        self.url = rpc_url(url)
        self._token = token
        self._sessions: dict[str, Session] = {}
        # Events of a session this connection does not know yet: the agent may send a
        # resumed session's buffered events before its answer to resume_session (#16).
        self._early: dict[str, list[dict[str, Any]]] = {}
        self._peer: Peer | None = None
        self._connection: contextlib.AbstractAsyncContextManager[Peer] | None = None

    @property
    def peer(self) -> Peer:
        if self._peer is None:
            raise RuntimeError("the agent is not connected: use 'async with Agent(url) as agent'")
        return self._peer

    async def __aenter__(self) -> Agent:
        self._connection = connect(
            self.url, token=self._token, codecs=("msgpack",), handlers={EVENT_METHOD: self._on_event}
        )
        self._peer = await self._connection.__aenter__()
        self._peer.on_close.append(self._lost)
        return self

    def _lost(self, peer: Peer) -> None:
        """The connection ended: every session here is unreachable (resume elsewhere)."""
        reason = f"the connection to the agent was lost ({peer.close_reason or 'closed'})"
        for session in list(self._sessions.values()):
            session._end(reason)

    async def __aexit__(self, *exc: object) -> None:
        connection, self._connection, self._peer = self._connection, None, None
        if connection is not None:
            await connection.__aexit__(None, None, None)

    def _on_event(self, event: dict[str, Any]) -> None:
        session_id = str(event.get("session"))
        session = self._sessions.get(session_id)
        if session is not None:
            session._event(str(event.get("kind")), event.get("data") or {}, event.get("seq"))
        elif sum(len(v) for v in self._early.values()) < MAX_UNCLAIMED_EVENTS:
            self._early.setdefault(session_id, []).append(event)

    def _known(self, session: Session) -> Session:
        """Track ``session``, and hand it the events that came before the answer naming it."""
        self._sessions[session.id] = session
        for event in self._early.pop(session.id, []):
            self._on_event(event)
        return session

    async def open_session(self, product: str) -> Session:
        """Start a session for ``product`` (its host process is ready when this returns)."""
        document = await self.peer.call("open_session", product, target=META)
        return self._known(Session(self, document))

    @contextlib.asynccontextmanager
    async def session(self, product: str) -> AsyncIterator[Session]:
        """``async with agent.session("shell") as s``: opened on entry, closed on exit."""
        session = await self.open_session(product)
        try:
            yield session
        finally:
            if not session.ended.done() and self._peer is not None and not self._peer.closed:
                await session.close()

    async def resume(self, session_id: str, resume_token: str) -> Session:
        """Take a session back (after a disconnect or a detach); buffered events follow."""
        document = await self.peer.call("resume_session", session_id, resume_token, target=META)
        return self._known(Session(self, document))

    async def sessions(self) -> list[dict[str, Any]]:
        """Every session on the agent (ids, products, states; never tokens)."""
        result: list[dict[str, Any]] = await self.peer.call("list_sessions", target=META)
        return result

    async def info(self) -> dict[str, Any]:
        """The agent's name, version, host name, sessions and installed products."""
        result: dict[str, Any] = await self.peer.call("agent_info", target=META)
        return result

    async def ping(self) -> str:
        result: str = await self.peer.call("ping", target=META)
        return result


__all__ = [
    "AccessToken",
    "Agent",
    "ManagerClient",
    "OutputLine",
    "RemoteProcess",
    "Session",
    "SessionEnded",
    "TokenRefused",
]
