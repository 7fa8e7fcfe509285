"""Connecting to a service: ``async with connect(url) as peer``, or ``connect_sync`` for scripts.

URLs: ``ws://host:port/rpc`` (or ``wss://``), ``tcp://host:port``, ``unix:///path``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from herder.net import WS_SCHEMES
from herder.rpc.errors import ConnectionLost, HandshakeRefused
from herder.rpc.handlers import Method, Registry
from herder.rpc.peer import Peer
from herder.rpc.transport import ClientWebSocketTransport, StreamTransport, Transport
from herder.wire import (
    CODEC_NAMES,
    DEFAULT_MAX_FRAME_SIZE,
    Hello,
    Refusal,
    codec_for,
    decode_welcome,
    encode_hello,
)

if TYPE_CHECKING:
    import ssl

CONNECT_TIMEOUT_S = 10.0


async def open_transport(
    url: str,
    *,
    token: str | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    address: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> Transport:
    """Open the connection ``url`` names (no handshake yet).

    ``tls``: the context a ``wss://`` URL is opened with (a CA of one's own, a pinned
    certificate, a client certificate: ``herder.tls``); default: the system's CAs.

    ``address``: connect to this address of the URL's host name (the request still names
    the host: ``Host``, TLS's server name), not to the resolver's first.

    Raises:
        ValueError: an unsupported URL scheme.
        ConnectionLost: the connection could not be made.
        HandshakeRefused: an HTTP front door refused the WebSocket (401, 403...).
    """
    parts = urllib.parse.urlsplit(url)
    try:
        if parts.scheme in WS_SCHEMES:
            from websockets.asyncio.client import connect as ws_connect
            from websockets.exceptions import InvalidMessage, InvalidStatus

            headers = {"Authorization": f"Bearer {token}"} if token else None
            # No per-message compression: it costs a core per ~30 MB/s of incompressible
            # data (files, MessagePack) and a protocol on loopback or a LAN gains little.
            try:
                ws = await ws_connect(
                    url,
                    additional_headers=headers,
                    max_size=max_frame_size,
                    open_timeout=CONNECT_TIMEOUT_S,
                    compression=None,
                    **_connect_to(address),
                    **_tls_option(tls),
                )
            except InvalidStatus as exc:  # a front door refused it before the protocol began
                status = exc.response.status_code
                raise HandshakeRefused(str(status), f"{url} refused the connection: HTTP {status}") from None
            except InvalidMessage as exc:  # closed unanswered (a TLS server wanting a client certificate)
                raise ConnectionLost(f"cannot connect to {url}: {exc}") from exc
            return ClientWebSocketTransport(ws, max_frame_size)
        if parts.scheme == "tcp":
            if not parts.hostname or not parts.port:
                raise ValueError(f"{url!r}: a tcp URL needs a host and a port")
            reader, writer = await asyncio.open_connection(
                address or parts.hostname, parts.port, limit=max_frame_size
            )
            return StreamTransport(reader, writer, max_frame_size)
        if parts.scheme == "unix":
            reader, writer = await asyncio.open_unix_connection(parts.path, limit=max_frame_size)
            return StreamTransport(reader, writer, max_frame_size)
    except OSError as exc:
        raise ConnectionLost(f"cannot connect to {url}: {exc}") from exc
    raise ValueError(f"{url!r}: use ws://, wss://, tcp:// or unix://")


def _connect_to(address: str | None) -> dict[str, Any]:
    """websockets' keyword for the address to connect to (the URI still names the host)."""
    return {"host": address} if address else {}


def _tls_option(tls: ssl.SSLContext | None) -> dict[str, Any]:
    """websockets' keyword for a context of one's own (left out: its default, the system's CAs)."""
    return {"ssl": tls} if tls is not None else {}


def registry_of(handlers: Mapping[str, Callable[..., Any] | Method] | None) -> Registry:
    """A registry of methods this side offers to the service (no auth: we dialled it).

    A handler may be a ``Method`` built beforehand (to declare its ``params`` model); it
    is served under the name it is given here.
    """
    registry = Registry()
    for name, func in (handlers or {}).items():
        if isinstance(func, Method):
            registry.add(dataclasses.replace(func, name=name, auth=False))
        else:
            registry.add(Method.of(func, name=name, auth=False))
    return registry


async def handshake(
    transport: Transport,
    *,
    token: str | None,
    codecs: tuple[str, ...],
    handlers: Mapping[str, Callable[..., Any] | Method] | None = None,
) -> Peer:
    """Say hello and build the peer from the service's welcome.

    Raises:
        HandshakeRefused: the service refused (bad token, no common codec...).
    """
    await transport.send(encode_hello(Hello(codecs=codecs, token=token)))
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        answer = decode_welcome(await transport.recv())
    if isinstance(answer, Refusal):
        await transport.close()
        raise HandshakeRefused(answer.code, answer.message)
    return Peer(
        transport,
        codec_for(answer.codec),
        registry=registry_of(handlers),
        remote=answer.service,
        principal="service",
    )


@contextlib.asynccontextmanager
async def connect(
    url: str,
    *,
    token: str | None = None,
    codecs: tuple[str, ...] = CODEC_NAMES,
    handlers: Mapping[str, Callable[..., Any] | Method] | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    address: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Peer]:
    """Connect, say hello, and yield the peer; close it on exit.

    ``handlers`` are methods the service may call back on this connection; ``address``
    is ``open_transport``'s.

    Raises:
        ConnectionLost: the service could not be reached.
        HandshakeRefused: the service refused the connection.
    """
    transport = await open_transport(
        url, token=token, max_frame_size=max_frame_size, address=address, tls=tls
    )
    try:
        peer = await handshake(transport, token=token, codecs=codecs, handlers=handlers)
    except BaseException:
        await transport.close()
        raise
    async with peer:
        yield peer


class SyncPeer:
    """A blocking client for scripts: an event loop in a thread runs the connection."""

    def __init__(self, url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="herder-rpc-sync", daemon=True)
        self._thread.start()
        self._cm = connect(url, **options)
        try:
            self.peer: Peer = self._run(self._cm.__aenter__())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Any, timeout_s: float | None = None) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def call(
        self, method: str, *args: Any, target: str | None = None, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Call and wait for the answer (same errors as ``Peer.call``)."""
        return self._run(self.peer.call(method, *args, target=target, timeout=timeout, **kwargs))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._cm.__aexit__(None, None, None), timeout_s=10)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> SyncPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_sync(url: str, **options: Any) -> SyncPeer:
    """``with connect_sync(url) as client: client.call("square", 4)``."""
    return SyncPeer(url, **options)
