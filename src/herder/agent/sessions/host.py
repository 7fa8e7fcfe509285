"""A session's host process (``herder host``): loads a product and serves it to the agent.

The Inedo seed's product host process: started only by the agent, one per session,
talking to the agent over one channel and nothing else. Here the channel is a Unix
socketpair carrying the wire protocol's frames (the seed's shared-memory buffer does
the same job on Windows). The process refuses to run without it: it needs the
descriptor the agent passed (``HERDER_HOST_FD``) and the one-time secret the agent
handed it (``HERDER_HOST_SECRET``), which it presents back in its hello so the agent
knows the channel's other end is the process it started. Both are removed from the
environment at once, so nothing the session launches can see them.

What it serves, under the product's name as target: each extension's exposed methods as
``<extension>.<method>``; and under the target ``session``: ``describe`` and ``close``
(release everything, then exit). Events for the client go to the agent as ``event``
notifications under ``session``, in order, through one queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

FD_VAR = "HERDER_HOST_FD"
SECRET_VAR = "HERDER_HOST_SECRET"
SESSION_VAR = "HERDER_SESSION"
CONFINED_VAR = "HERDER_HOST_CONFINED"
SESSION_TARGET = "session"
NOT_BY_HAND = (
    "herder host: this program serves one session for a herder agent, which starts it with "
    "a channel and a one-time secret; it cannot be run by hand. Open a session through the "
    "agent instead (herder.client.Agent(...).session(product))."
)
EXIT_NOT_BY_HAND = 2
# At close, how long the last events may take to reach the agent.
LAST_EVENTS_TIMEOUT_S = 5.0
EXIT_UNKNOWN_PRODUCT = 3


def _channel_fd() -> int | None:
    """The channel's descriptor, if the environment names one that is a socket."""
    text = os.environ.get(FD_VAR, "")
    if not text.isdigit():
        return None
    fd = int(text)
    try:
        return fd if stat.S_ISSOCK(os.fstat(fd).st_mode) else None
    except OSError:
        return None


class HostSession:
    """The session as extensions see it (``herder.products.SessionApi``)."""

    def __init__(self, session_id: str, root: Path, confined: bool, env: dict[str, str]) -> None:
        self._id = session_id
        self._root = root
        self._confined = confined
        self._env = env
        self._events: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self._releases: list[Callable[[], Awaitable[None] | None]] = []
        self._pumped = asyncio.Event()
        self._closing = False
        self.closed = False

    @property
    def id(self) -> str:
        return self._id

    @property
    def root(self) -> Path:
        return self._root

    @property
    def confined(self) -> bool:
        return self._confined

    @property
    def env(self) -> dict[str, str]:
        return dict(self._env)

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        if not self.closed:
            self._events.put_nowait((kind, data))

    def on_close(self, release: Callable[[], Awaitable[None] | None]) -> None:
        self._releases.append(release)

    async def pump_events(self, peer: Any) -> None:
        """Send events to the agent in the order they were emitted."""
        try:
            while (item := await self._events.get()) is not None:
                kind, data = item
                await peer.notify("event", kind, data, target=SESSION_TARGET)
        finally:
            self._pumped.set()

    async def close(self) -> None:
        """Release everything, last registered first, then send the last events; idempotent.

        Events emitted while releasing (the exits of programs stopped now) still go out:
        the agent hears them before this returns, so before it closes the channel.
        """
        if self._closing:
            return
        self._closing = True
        for release in reversed(self._releases):
            try:
                result = release()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # one failing release must not keep the others
                print(f"herder host: releasing {release!r} failed: {exc!r}", file=sys.stderr)
        self.closed = True
        self._events.put_nowait(None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pumped.wait(), LAST_EVENTS_TIMEOUT_S)


async def serve(fd: int, secret: str, product: str) -> None:
    """Load ``product``, connect over the channel, serve until it closes."""
    from herder.agent.sessions.channel import open_channel
    from herder.products import load_extensions
    from herder.rpc import Method, Registry, handshake
    from herder.wire import DEFAULT_MAX_FRAME_SIZE

    extensions = load_extensions(product)
    env = {k: v for k, v in os.environ.items() if k not in (FD_VAR, SECRET_VAR)}
    session = HostSession(
        os.environ.get(SESSION_VAR, "?"), Path.cwd(), os.environ.get(CONFINED_VAR, "1") == "1", env
    )
    registry = Registry()
    described: dict[str, list[str]] = {}
    for ext_name, cls in sorted(extensions.items()):
        instance = cls(session)
        session.on_close(instance.shutdown)
        exposed = instance.exposed()
        described[ext_name] = sorted(exposed)
        for method_name, func in exposed.items():
            registry.add(Method.of(func, name=f"{ext_name}.{method_name}", auth=False), target=product)

    def describe() -> dict[str, Any]:
        """The product and its extensions' methods."""
        return {"product": product, "extensions": described, "pid": os.getpid()}

    os.set_inheritable(fd, False)  # programs the session launches must never get the channel
    sock = socket.socket(fileno=fd)
    transport = await open_channel(sock, DEFAULT_MAX_FRAME_SIZE)
    peer = await handshake(transport, token=secret, codecs=("msgpack",))
    peer.registry = registry
    peer.info = {"name": f"herder-host:{product}"}

    async def close() -> None:
        """Close every handle and stop every process of the session (the agent then
        closes the channel, which ends this process)."""
        await session.close()

    registry.add(Method.of(describe, auth=False), target=SESSION_TARGET)
    registry.add(Method.of(close, auth=False), target=SESSION_TARGET)
    async with asyncio.TaskGroup() as tg:
        pump = tg.create_task(session.pump_events(peer))
        try:
            await peer.run()
        finally:
            await session.close()
            pump.cancel()


# glibc's mallopt parameters (malloc.h), and the values the host sets.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # above a frame (16 MiB): file chunks come from the heap
_TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


def _keep_large_buffers() -> None:
    """Let the heap keep the megabytes a file's chunks go through, instead of mapping and
    unmapping them for every chunk (each new mapping is zeroed page by page by the kernel:
    measured, 280,000 page faults in 4 s of reads, the host's CPU per GB tripled). glibc
    only; elsewhere nothing happens."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m herder.agent.sessions.host PRODUCT`` (as the agent starts it)."""
    args = sys.argv[1:] if argv is None else argv
    fd = _channel_fd()
    secret = os.environ.pop(SECRET_VAR, "")
    os.environ.pop(FD_VAR, None)
    if fd is None or not secret or len(args) != 1:
        print(NOT_BY_HAND, file=sys.stderr)
        return EXIT_NOT_BY_HAND
    from herder.products import UnknownProduct

    _keep_large_buffers()

    runner: Callable[..., Any]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(fd, secret, args[0]))
    except UnknownProduct as exc:
        print(f"herder host: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN_PRODUCT
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
