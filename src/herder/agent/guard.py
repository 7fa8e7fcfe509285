"""The agent's front door: which requests get in, and what one client may cost.

Open on loopback is not open to the web. Accepting JSON without a JSON content type
(the seed's walkthrough does that) means any web page could make a browser post to
``127.0.0.1:8010``. So, even on loopback:

* the ``Host`` header must name the agent (loopback names, the bound address, and the
  configured ``allowed_hosts``), which defeats DNS rebinding;
* a state-changing request or a WebSocket upgrade whose ``Origin`` is foreign is
  refused (a missing ``Origin`` is fine: browsers always send it on those requests);
* when an auth token is configured, every request must carry it as a bearer token;
* bodies are capped in size and must arrive within a deadline;
* headers must arrive within a deadline and a size (``GuardedHttpToolsProtocol``), so a
  slow client cannot pin a connection, and the connection count is capped by uvicorn's
  ``limit_concurrency``.

``Guard`` is a plain ASGI middleware (no per-request objects beyond what it needs), so
it costs microseconds on the hot path.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from herder.net import LOOPBACK_NAMES, host_name
from herder.principals import set_principal

if TYPE_CHECKING:
    from herder.agent.trust import Trust

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Any
Send = Any
ASGIApp = Any

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths anyone may read without a token: a liveness probe must not need a secret.
PUBLIC_PATHS = frozenset({"/healthz"})
# Request line plus headers; real clients send a few hundred bytes.
MAX_HEADER_BYTES = 64 * 1024


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


class Guard:
    """ASGI middleware enforcing the rules in the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Iterable[str],
        auth_token: str | None,
        max_body_bytes: int,
        body_timeout_s: float,
        pool_for_host: Callable[[str], str | None] | None = None,
        trust: Trust | None = None,
    ) -> None:
        self.app = app
        self._trust = trust
        self._pool_for_host = pool_for_host
        self.allowed = frozenset(LOOPBACK_NAMES | {host_name(h) for h in allowed_hosts})
        self._token = f"Bearer {auth_token}".encode() if auth_token else None
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            length = self._check(scope)
        except _Refused as refusal:
            await self._refuse(kind, send, refusal)
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        if length is not None and length > self.max_body_bytes:
            await self._refuse(kind, send, _too_large(self.max_body_bytes))
            return
        if length == 0:  # no body: nothing to limit (most requests: GETs)
            await self.app(scope, receive, send)
            return
        await self._call_with_body_limits(scope, receive, send)

    def _check(self, scope: Scope) -> int | None:
        """Apply the Host, Origin and token rules; return the body's declared length.

        Returns 0 when there is no body, None when its length is unknown (chunked).

        Raises:
            _Refused: a rule is broken.
        """
        host, origin, auth, length, chunked = _front_headers(scope["headers"])
        if host is not None and self._pool_for_host is not None and (pool := self._pool_for_host(host)):
            raise _Refused(
                421,
                "misdirected",
                f"Host {host!r} names pool {pool!r}, but this connection serves the agent's API; "
                "send the request on a new connection",
                "Host",
            )
        if host is None or host_name(host) not in self.allowed:
            raise _Refused(
                403,
                "forbidden_host",
                f"Host {host!r} is not served here (DNS rebinding protection); "
                "add it to the agent's allowed_hosts",
                "Host",
            )
        if origin is not None and (scope["type"] == "websocket" or scope["method"] not in SAFE_METHODS):
            netloc = urllib.parse.urlsplit(origin).netloc
            if not netloc or host_name(netloc) not in self.allowed:
                raise _Refused(
                    403,
                    "forbidden_origin",
                    f"requests from origin {origin!r} are refused",
                    "Origin",
                )
        if scope["path"] not in PUBLIC_PATHS:
            if self._trust is not None:
                who = self._check_manager_token(auth)
                if who is not None:
                    set_principal(scope, *who)
            elif self._token is not None:
                self._check_token(auth)
        if length is None:
            return None if chunked else 0
        try:
            return int(length)
        except ValueError:
            raise _Refused(400, "invalid", "Content-Length is not a number", "Content-Length") from None

    def _check_token(self, auth: bytes | None) -> None:
        assert self._token is not None
        if auth is None or not hmac.compare_digest(auth, self._token):
            raise _Refused(
                401,
                "unauthorized",
                "a valid 'Authorization: Bearer <token>' is required",
                "Authorization",
            )

    def _check_manager_token(self, auth: bytes | None) -> tuple[str | None, str] | None:
        """An access token of the manager this agent works for (or the agent's own secret);
        who it names (None for the secret: an admin's)."""
        from herder.auth import TokenError

        assert self._trust is not None
        if auth is not None and self._token is not None and hmac.compare_digest(auth, self._token):
            return None
        scheme, _, token = (auth or b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(
                401,
                "unauthorized",
                "an access token of this agent's manager is required (herder keys token)",
                "Authorization",
            )
        if not self._trust.ready:
            raise _Refused(
                503, "unavailable", "the agent has not reached its manager for its keys yet", "Authorization"
            )
        try:
            claims = self._trust.verify(token.strip())
        except TokenError as exc:
            raise _Refused(401, exc.reason, str(exc), "Authorization") from None
        return claims.sub, claims.role or "user"

    async def _call_with_body_limits(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = _BodyLimiter(self, receive, send)
        try:
            await self.app(scope, limiter.receive, limiter.send)
        except Exception:
            if not limiter.refused:
                raise
            # The app failed reading a body the guard cut off: already answered.

    @staticmethod
    async def _refuse(kind: str, send: Send, refusal: _Refused) -> None:
        body = json.dumps({"error": refusal.code, "message": str(refusal), "field": refusal.field}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if kind == "websocket":
            # Before accept, uvicorn turns this into an HTTP response to the upgrade.
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": refusal.status,
                    "headers": headers,
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
            return
        if refusal.status in (408, 413, 421):
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyLimiter:
    """The body's size cap and deadline for one request.

    When a limit is broken the limiter answers itself (413 or 408, if the app has not
    started its response) and tells the app the client went away; whatever the app
    sends after that is dropped.
    """

    def __init__(self, guard: Guard, receive: Receive, send: Send) -> None:
        self._guard = guard
        self._receive = receive
        self._send = send
        self._deadline = asyncio.get_running_loop().time() + guard.body_timeout_s
        self._received = 0
        self._body_done = False
        self._started = False
        self.refused = False

    async def _refuse(self, refusal: _Refused) -> Message:
        if not self._started and not self.refused:
            self.refused = True
            await Guard._refuse("http", self._send, refusal)
        return {"type": "http.disconnect"}

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        if self._body_done:
            later: Message = await self._receive()  # e.g. a disconnect while streaming
            return later
        try:
            async with asyncio.timeout_at(self._deadline):
                message: Message = await self._receive()
        except TimeoutError:
            limit = self._guard.body_timeout_s
            return await self._refuse(
                _Refused(408, "timeout", f"the request body did not arrive within {limit:g} s")
            )
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._guard.max_body_bytes:
                return await self._refuse(_too_large(self._guard.max_body_bytes))
            self._body_done = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self._started = True
        await self._send(message)


def _front_headers(
    headers: list[tuple[bytes, bytes]],
) -> tuple[str | None, str | None, bytes | None, bytes | None, bool]:
    """Host, Origin, Authorization, Content-Length, and whether a Transfer-Encoding is set."""
    host = origin = None
    auth = length = None
    chunked = False
    for name, value in headers:
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"authorization":
            auth = value
        elif name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = True
    return host, origin, auth, length, chunked


def _too_large(limit: int) -> _Refused:
    return _Refused(413, "too_large", f"the request body is larger than {limit} bytes", "body")


_HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain\r\nconnection: close\r\ncontent-length: 31\r\n\r\n"
    b"the request headers are too big"
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size cap on request headers.

    uvicorn bounds idle keep-alive connections but not a client that opens a
    connection and then dribbles its headers; this closes such connections.
    """

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_headers = True
        super().connection_made(transport)
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        if self._in_headers and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            end = data.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else end
            if self._header_bytes > MAX_HEADER_BYTES:
                if not self.transport.is_closing():
                    self.transport.write(_HEADERS_TOO_LARGE)
                    self.transport.close()
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._in_headers = True
        self._header_bytes = 0
        self._arm_header_deadline()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)


def protocol_with_header_timeout(timeout_s: float) -> type[GuardedHttpToolsProtocol]:
    """A protocol class whose header deadline is ``timeout_s`` (uvicorn takes a class)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"header_timeout_s": timeout_s})
