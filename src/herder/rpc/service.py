"""Services: named sets of methods served over WebSocket and raw TCP (or a Unix socket).

    svc = Service("math", "1.0.0")

    @svc.method(auth=False)
    async def square(x: float) -> float:
        return x * x

    svc.run(port=3636)                      # WebSocket at ws://127.0.0.1:3636/rpc
    svc.run(port=3636, tcp_port=3637)       # and length-prefixed frames on tcp://...:3637

A service can also be mounted in a FastAPI app (``svc.mount(app)``), which is how the
agent and the manager serve theirs. Each connection opens with the handshake
(``herder.wire.handshake``): the token it presents goes to the service's verifier, and
a refused token closes the connection with ``unauthorized``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from herder.frontdoor import FailureLog, HttpLimits, claimed_subject
from herder.net import listen_socket
from herder.rpc.auth import Unauthorized, Verifier
from herder.rpc.errors import ConnectionLost
from herder.rpc.handlers import Method, Registry
from herder.rpc.peer import Peer
from herder.rpc.transport import ServerWebSocketTransport, StreamTransport, Transport
from herder.wire import (
    CODEC_NAMES,
    DEFAULT_MAX_FRAME_SIZE,
    ErrorCode,
    Refusal,
    Welcome,
    WireError,
    choose_codec,
    codec_for,
    decode_hello,
    encode_welcome,
)

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic import BaseModel

    from herder.rpc.discovery import Registration

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
# A client must say hello this soon after connecting, or it is disconnected.
HANDSHAKE_TIMEOUT_S = 10.0
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Service:
    """A named, versioned set of methods."""

    def __init__(
        self,
        name: str,
        version: str = "0.0.0",
        *,
        verifier: Verifier | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        codecs: tuple[str, ...] = CODEC_NAMES,
        anonymous: Any = None,
        limits: HttpLimits | None = None,
    ) -> None:
        self.name = name
        # What one client may cost the service's own HTTP server (``serve``): the front
        # door's limits, as the agent's and the manager's.
        self.limits = limits or HttpLimits()
        self.auth_failures = FailureLog(
            lines_per_interval=self.limits.auth_log_lines, interval_s=self.limits.auth_log_interval_s
        )
        # The principal of connections that present no token (None: they get only
        # auth=False methods). The agent running open on loopback sets one.
        self.anonymous = anonymous
        self.version = version
        self.verifier = verifier
        self.max_frame_size = max_frame_size
        self.codecs = codecs
        self.registry = Registry()
        self.peers: set[Peer] = set()
        self.ws_port: int | None = None
        self.tcp_port: int | None = None

    @property
    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}

    @overload
    def method(self, func: F) -> F: ...

    @overload
    def method(
        self, *, name: str | None = None, auth: bool = True, params: type[BaseModel] | None = None
    ) -> Callable[[F], F]: ...

    def method(
        self,
        func: F | None = None,
        *,
        name: str | None = None,
        auth: bool = True,
        params: type[BaseModel] | None = None,
    ) -> Any:
        """Register a handler (sync or async): ``@svc.method`` or ``@svc.method(auth=False)``.

        A parameter annotated ``Peer`` receives the calling connection (to call it back).
        Every method requires credentials unless ``auth=False``. With ``params`` (a
        pydantic model), the handler receives the call's arguments validated as that
        model, and arguments that do not validate are answered ``invalid_params``.
        """

        def register(f: F) -> F:
            self.registry.add(Method.of(f, name=name, auth=auth, params=params))
            return f

        return register(func) if func is not None else register

    # -- connections ---------------------------------------------------------------------

    async def handle(
        self, transport: Transport, *, header_token: str | None = None, address: str | None = None
    ) -> None:
        """Run one connection: handshake, then serve (and call) until it ends.

        ``address``, the client's, goes into the log line of a refused token.
        """
        try:
            peer = await self._handshake(transport, header_token, address)
        except WireError as exc:
            log.info("RPC connection refused during the handshake: %s", exc)
            await self._refuse_hello(transport, exc)
            await transport.close()
            return
        except (ConnectionLost, TimeoutError) as exc:
            log.info("RPC connection lost during the handshake: %s", exc)
            await transport.close()
            return
        if peer is None:
            return
        self.peers.add(peer)
        try:
            await peer.run()
        finally:
            self.peers.discard(peer)

    async def _handshake(
        self, transport: Transport, header_token: str | None, address: str | None = None
    ) -> Peer | None:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            hello = decode_hello(await transport.recv())
        chosen = choose_codec(hello, self.codecs)
        principal = self.anonymous
        token = hello.token or header_token
        if isinstance(chosen, str) and token is not None:
            if self.verifier is None:
                chosen = Refusal(ErrorCode.UNAUTHORIZED, "this service does not accept credentials")
            else:
                try:
                    principal = await self.verifier.verify(token)
                except Unauthorized as exc:
                    chosen = Refusal(ErrorCode.UNAUTHORIZED, str(exc))
                    self.auth_failures.failed(
                        who=claimed_subject(token), address=address, why="unauthorized", detail=str(exc)
                    )
        if isinstance(chosen, Refusal):
            await transport.send(encode_welcome(chosen))
            await transport.close()
            return None
        await transport.send(encode_welcome(Welcome(codec=chosen, service=self.info)))
        return Peer(transport, codec_for(chosen), registry=self.registry, info=self.info, principal=principal)

    def mount(self, app: FastAPI, path: str = "/rpc") -> None:
        """Serve this service over WebSocket at ``path`` of a FastAPI app."""
        from starlette.routing import WebSocketRoute

        # An ASGI app rather than a function of the WebSocket: the transport then
        # reads and writes the connection's ASGI messages itself (ServerWebSocketTransport),
        # and no dependency injection is resolved (nor anything documented by FastAPI).
        app.router.routes.append(WebSocketRoute(path, _WebSocketEndpoint(self)))

    async def _refuse_hello(self, transport: Transport, exc: WireError) -> None:
        """Tell a client whose hello was unreadable why it is disconnected (best effort)."""
        with contextlib.suppress(ConnectionLost, WireError, OSError):
            await transport.send(encode_welcome(Refusal(exc.code, str(exc)[:200])))

    async def serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one byte-stream connection (``asyncio.start_server``'s callback)."""
        peer = writer.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None
        await self.handle(StreamTransport(reader, writer, self.max_frame_size), address=address)

    # -- running alone -------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 3636,
        *,
        tcp_port: int | None = None,
        unix_path: str | None = None,
        started: asyncio.Event | None = None,
    ) -> None:
        """Serve until cancelled (or SIGINT): WebSocket on ``port`` at ``/rpc``, and raw
        frames on ``tcp_port`` and ``unix_path`` when given.

        The HTTP server stands behind the front door (``herder.frontdoor``) with
        ``self.limits``: head deadline and size, body size, connection cap. It checks
        no ``Host`` (a service is reached under any name; ``mount`` refuses a foreign
        ``Origin``), and credentials are the handshake's.

        Raises:
            ValueError: a non-loopback host without a verifier (no way to tell callers apart).
        """
        import uvicorn
        from fastapi import FastAPI

        from herder.frontdoor import Door, server_options

        if host not in LOOPBACK and self.verifier is None:
            raise ValueError(
                f"refusing to serve on {host} without a verifier: off loopback, auth is required"
            )
        app = FastAPI(title=f"{self.name} {self.version}", openapi_url=None, docs_url=None, redoc_url=None)
        self.mount(app)
        servers: list[asyncio.Server] = []
        if tcp_port is not None:
            tcp = await asyncio.start_server(self.serve_stream, host, tcp_port)
            self.tcp_port = tcp.sockets[0].getsockname()[1]
            servers.append(tcp)
        if unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(unix_path)
            servers.append(await asyncio.start_unix_server(self.serve_stream, unix_path))
        sock = listen_socket(host, port)
        self.ws_port = sock.getsockname()[1]
        config = uvicorn.Config(
            Door(app, limits=self.limits, hosts=None),
            **server_options(self.limits),
            log_config=None,
            access_log=False,
            ws="websockets-sansio",
            ws_per_message_deflate=False,  # see rpc.client: compression costs more than it saves
            ws_max_size=self.max_frame_size,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        try:
            if started is not None:
                started.set()  # the socket listens: connections wait in its backlog
            await server.serve(sockets=[sock])
        finally:
            sock.close()
            server.should_exit = True
            for s in servers:
                s.close()
            for peer in list(self.peers):
                await peer.close("the service is stopping")

    async def register(
        self,
        key: str,
        *,
        manager: str,
        token: str | None = None,
        url: str | None = None,
        metadata: dict[str, Any] | None = None,
        auth_key: str | None = None,
    ) -> Registration:
        """Register this service in a manager's registry under ``key`` (the seed's seven
        parts), kept alive by an open link; ``url`` defaults to this service's WebSocket
        address once it serves. ``await registration.close()`` deregisters it.

        Credentials: ``auth_key``, a key the manager issued (``herder keys issue``), buys a
        fresh access token at every (re)connection; or ``token``, an access token as is.

        Raises:
            herder.rpc.RemoteError: the manager refused (a bad key, another user's name).
        """
        from herder.rpc.discovery import Registration

        if url is None:
            if self.ws_port is None:
                raise RuntimeError(
                    "the service does not serve yet: give url=, or register after serve() started"
                )
            url = f"ws://127.0.0.1:{self.ws_port}/rpc"
        registration = Registration(key, url, dict(metadata or {}), manager, token, auth_key)
        await registration.start()
        return registration

    def run(self, host: str = "127.0.0.1", port: int = 3636, *, tcp_port: int | None = None) -> None:
        """Serve in the foreground until Ctrl-C."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.serve(host, port, tcp_port=tcp_port))


class _WebSocketEndpoint:
    """The ASGI app of a service's WebSocket route: the checks and the accept through
    Starlette's ``WebSocket``, then the connection served (``Service.handle``)."""

    def __init__(self, service: Service) -> None:
        self._service = service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.websockets import WebSocket

        ws = WebSocket(scope, receive=receive, send=send)
        if not _same_origin(ws.headers.get("origin"), ws.headers.get("host")):
            # A web page from elsewhere, through the user's browser: refused, as the
            # agent's Guard refuses it, or any site could call auth=False methods.
            await ws.close(code=1008, reason="foreign Origin")
            return
        await ws.accept()
        auth = ws.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        client = ws.client.host if ws.client is not None else None
        service = self._service
        transport = ServerWebSocketTransport(ws, service.max_frame_size, receive=receive, send=send)
        await service.handle(transport, header_token=token, address=client)


def _same_origin(origin: str | None, host: str | None) -> bool:
    """No Origin (not a browser), or one naming the host the client connected to."""
    if origin is None:
        return True
    return bool(host) and urllib.parse.urlsplit(origin).netloc.lower() == (host or "").lower()
