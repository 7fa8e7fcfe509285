"""The ASGI half of the front door: which requests get in, and what one may cost.

Every herder HTTP server (the agent, the manager, RPC services) wraps its app in one
``Door``. In order, before any route runs:

1. an optional server-specific check of ``Host`` (the agent's pool Hosts: 421);
2. ``Host`` must name the server (loopback names, its bound address, ``allowed_hosts``),
   which defeats DNS rebinding;
3. a state-changing request or a WebSocket upgrade from a foreign ``Origin`` is refused:
   herder reads JSON whatever the content type says, so without this any web page open
   in a browser on the host could post to a server on loopback (a missing ``Origin`` is
   fine: browsers always send it on those requests);
4. a ``Content-Length`` over the route's bound is answered 413 before the body is read;
5. credentials (``authenticate``), except on the public paths; failures are logged
   (``authlog``), rate-limited; a browser's WebSocket, which cannot send
   ``Authorization``, offers its token as the subprotocol ``herder.bearer.<token>``
   beside ``herder`` (which the upgrade's answer then names);
6. while the app reads the body, its size is capped (a chunked body is cut at the
   bound: 413) and it must arrive within a deadline (408).

The request head's own bounds (deadline, size) are the protocol's (``protocol``): they
hold before the ASGI app is called at all. ``Door`` is a plain ASGI middleware with no
per-request objects but the body limiter, so it costs microseconds on the hot path.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from herder.auth import bearer_challenge
from herder.frontdoor.authlog import FailureLog, claimed_subject
from herder.frontdoor.limits import HttpLimits, RouteLimit
from herder.net import LOOPBACK_NAMES, host_name
from herder.principals import set_principal

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Any
Send = Any
ASGIApp = Any

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Where the door leaves the JSON nesting bound for ``herder.apierrors.read_json``.
JSON_DEPTH_KEY = "herder.max_json_depth"
# Where the door leaves its failure log for a public route that checks credentials of its
# own (the manager's /auth/token): ``note_failed_authentication``.
FAILURES_KEY = "herder.auth_failures"
AUTHORIZATION = "Authorization"
# A browser's WebSocket offers the subprotocols ``herder`` and ``herder.bearer.<token>``:
# its only way to send a token on the upgrade (it cannot set headers). See _browser_token.
BROWSER_PROTOCOL = "herder"
BEARER_PROTOCOL_PREFIX = "herder.bearer."


class Refused(Exception):
    """A request the door (or an ``Authenticate``) turns away, as the one error document.

    ``why`` is the reason a failed authentication is logged with (the code, unless a
    finer one helps an operator); ``who`` whoever the credentials claimed to be.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        why: str | None = None,
        who: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field
        self.why = why or code
        self.who = who


# Checks a request's credentials (the Authorization header's raw value, or None): sets
# the principal in the scope, or raises Refused.
Authenticate = Callable[[Scope, bytes | None], None]


class SharedSecret:
    """One secret, sent as ``Authorization: Bearer <secret>``."""

    def __init__(self, secret: str) -> None:
        self._expected = f"Bearer {secret}".encode()

    def matches(self, auth: bytes | None) -> bool:
        return auth is not None and hmac.compare_digest(auth, self._expected)

    def __call__(self, scope: Scope, auth: bytes | None) -> None:
        if not self.matches(auth):
            raise Refused(
                401,
                "unauthorized",
                "a valid 'Authorization: Bearer <token>' is required",
                AUTHORIZATION,
                why="no_credentials" if auth is None else "wrong_secret",
            )


class AccessTokens:
    """Access tokens (``herder.auth``) checked by ``verify``; the claims name the principal.

    ``secret``, when given, is accepted too, as an admin's credential with no name (the
    agent's own shared secret). ``ready`` False answers 503: the agent cannot check
    tokens before it has its manager's public keys.
    """

    def __init__(
        self,
        verify: Callable[[str], Any],
        *,
        missing: str,
        secret: str | None = None,
        ready: Callable[[], bool] | None = None,
        unready: str = "the server cannot check tokens yet",
    ) -> None:
        self._verify = verify
        self._missing = missing
        self._secret = SharedSecret(secret) if secret else None
        self._ready = ready
        self._unready = unready

    def __call__(self, scope: Scope, auth: bytes | None) -> None:
        from herder.auth import TokenError

        if self._secret is not None and self._secret.matches(auth):
            return
        scheme, _, token = (auth or b"").decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Refused(
                401,
                "unauthorized",
                self._missing,
                AUTHORIZATION,
                why="no_credentials" if auth is None else "not_a_bearer_token",
            )
        if self._ready is not None and not self._ready():
            raise Refused(503, "unavailable", self._unready, AUTHORIZATION)
        try:
            claims = self._verify(token)
        except TokenError as exc:
            raise Refused(401, exc.reason, str(exc), AUTHORIZATION, who=claimed_subject(token)) from None
        set_principal(scope, claims.sub, claims.role or "user")


def note_failed_authentication(
    scope: Mapping[str, Any], *, credential: str | None, why: str, detail: str = ""
) -> None:
    """Log a failed authentication that a route found itself, in its door's log (rate-limited)."""
    failures = scope.get(FAILURES_KEY)
    if isinstance(failures, FailureLog):
        client = scope.get("client")
        who = claimed_subject(credential) if credential else None
        failures.failed(who=who, address=client[0] if client else None, why=why, detail=detail)


class Door:
    """ASGI middleware enforcing the rules in the module docstring.

    Args:
        hosts: names ``Host`` may carry besides the loopback names; None checks neither
            ``Host`` nor ``Origin`` (an RPC service, which checks ``Origin`` itself).
        authenticate: the credentials check; None lets every request in.
        public_paths: paths that need no credentials (liveness, public keys).
        routes: body bounds for path prefixes that need another one than the default.
        check_host: a server's own first look at ``Host`` (raises ``Refused``).
        websocket_denial: refuse a WebSocket upgrade with an HTTP answer carrying the
            refusal's status; False closes it before accepting (clients see 403).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: HttpLimits,
        hosts: Iterable[str] | None,
        authenticate: Authenticate | None = None,
        public_paths: Iterable[str] = (),
        routes: Sequence[RouteLimit] = (),
        check_host: Callable[[str], None] | None = None,
        websocket_denial: bool = True,
    ) -> None:
        self.app = app
        self.allowed = None if hosts is None else frozenset(LOOPBACK_NAMES | {host_name(h) for h in hosts})
        self._authenticate = authenticate
        self._public = frozenset(public_paths)
        self._check_host = check_host
        self._websocket_denial = websocket_denial
        self.max_body_bytes = limits.max_body_bytes
        self.body_timeout_s = limits.body_timeout_s
        self._json_depth = limits.max_json_depth
        self._routes = tuple(
            (r.prefix, r.max_body_bytes, r.body_timeout_s or limits.body_timeout_s) for r in routes
        )
        self.failures = FailureLog(
            lines_per_interval=limits.auth_log_lines, interval_s=limits.auth_log_interval_s
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        try:
            length, max_bytes, timeout_s = self._check(scope)
        except Refused as refusal:
            await self._refuse(scope, send, refusal)
            return
        if length == 0:  # no body (most requests: GETs) or a WebSocket
            if kind == "websocket" and BROWSER_PROTOCOL in scope.get("subprotocols", ()):
                send = _choosing_protocol(send)
            await self.app(scope, receive, send)
            return
        scope[JSON_DEPTH_KEY] = self._json_depth
        limiter = _BodyLimiter(receive, send, max_bytes, timeout_s)
        try:
            await self.app(scope, limiter.receive, limiter.send)
        except Exception:
            if not limiter.refused:
                raise
            # The app failed reading a body the door cut off: already answered.

    def admits(self, scope: Scope) -> bool:
        """Whether the request passes every rule, nothing logged and nothing answered.

        For a fast path that answers some requests below the app (the agent's status
        reads): a request it does not admit goes the usual way, through ``__call__``,
        which refuses it, and logs a failed authentication, exactly once. Credentials
        that pass set the principal in ``scope`` as ``__call__`` does.
        """
        try:
            self._check(scope, log=False)
        except Refused:
            return False
        return True

    def _check(self, scope: Scope, *, log: bool = True) -> tuple[int | None, int, float]:
        """Apply the rules; the body's declared length (0: none, None: chunked) and its bounds.

        Raises:
            Refused: a rule is broken (a failed authentication is logged, if ``log``).
        """
        host = origin = auth = length = None
        chunked = False
        for name, value in scope["headers"]:
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
        websocket = scope["type"] == "websocket"
        if websocket and auth is None and scope.get("subprotocols"):
            auth = _browser_token(scope)
        if self.allowed is not None:
            self._check_names(host, origin, websocket or scope["method"] not in SAFE_METHODS)
        path = scope["path"]
        max_bytes, timeout_s = self._bounds(path)
        declared = 0 if websocket else _body_length(length, chunked, max_bytes)
        if self._authenticate is not None:
            self._check_credentials(scope, path, auth, log)
        return declared, max_bytes, timeout_s

    def _bounds(self, path: str) -> tuple[int, float]:
        """The body's size bound and deadline on ``path``: its route's, or the door's."""
        for prefix, max_bytes, timeout_s in self._routes:
            if path.startswith(prefix):
                return max_bytes, timeout_s
        return self.max_body_bytes, self.body_timeout_s

    def _check_names(self, host: str | None, origin: str | None, unsafe: bool) -> None:
        assert self.allowed is not None
        if host is not None and self._check_host is not None:
            self._check_host(host)
        if host is None or host_name(host) not in self.allowed:
            raise Refused(
                403,
                "forbidden_host",
                f"Host {host!r} is not served here (DNS rebinding protection); add it to allowed_hosts",
                "Host",
            )
        if origin is not None and unsafe:
            netloc = urllib.parse.urlsplit(origin).netloc
            if not netloc or host_name(netloc) not in self.allowed:
                raise Refused(
                    403, "forbidden_origin", f"requests from origin {origin!r} are refused", "Origin"
                )

    def _check_credentials(self, scope: Scope, path: str, auth: bytes | None, log: bool = True) -> None:
        assert self._authenticate is not None
        if path in self._public:
            scope[FAILURES_KEY] = self.failures  # for a route that checks credentials itself
            return
        try:
            self._authenticate(scope, auth)
        except Refused as refusal:
            if refusal.status == 401 and log:
                client = scope.get("client")
                self.failures.failed(
                    who=refusal.who,
                    address=client[0] if client else None,
                    why=refusal.why,
                    detail=str(refusal) if refusal.why == refusal.code else "",
                )
            raise

    async def _refuse(self, scope: Scope, send: Send, refusal: Refused) -> None:
        body, headers = _document(refusal)
        if scope["type"] == "websocket":
            if not self._websocket_denial:
                await send({"type": "websocket.close", "code": 1008})
                return
            # Before accept, uvicorn turns this into an HTTP response to the upgrade.
            start = {"type": "websocket.http.response.start", "status": refusal.status, "headers": headers}
            await send(start)
            await send({"type": "websocket.http.response.body", "body": body})
            return
        if refusal.status in (401, 403) and _has_body(scope):
            # The body is not read: closing stops it at once, rather than taking it in
            # (and dropping it) for as long as the client cares to send.
            headers.append((b"connection", b"close"))
        await _answer(send, refusal, body, headers)


def _browser_token(scope: Scope) -> bytes | None:
    """A browser's token, offered as the WebSocket subprotocol ``herder.bearer.<token>``
    (a browser cannot set ``Authorization`` on an upgrade), as ``Bearer <token>``.

    The entry is taken out of the scope's subprotocols and headers, so that no route
    echoes it and the manager's proxy does not pass the token on.
    """
    token: str | None = None
    kept: list[str] = []
    for protocol in scope["subprotocols"]:
        if protocol.startswith(BEARER_PROTOCOL_PREFIX) and token is None:
            token = protocol[len(BEARER_PROTOCOL_PREFIX) :]
        else:
            kept.append(protocol)
    if token is None:
        return None
    scope["subprotocols"] = kept
    headers = [(n, v) for n, v in scope["headers"] if n != b"sec-websocket-protocol"]
    if kept:
        headers.append((b"sec-websocket-protocol", ", ".join(kept).encode("latin-1")))
    scope["headers"] = headers
    return b"Bearer " + token.encode("latin-1")


def _choosing_protocol(send: Send) -> Send:
    """``send`` that accepts a browser's upgrade with the ``herder`` subprotocol, when the
    route chose none: a browser that offered subprotocols fails a connection without one."""

    async def choosing(message: Message) -> None:
        if message["type"] == "websocket.accept" and message.get("subprotocol") is None:
            message = {**message, "subprotocol": BROWSER_PROTOCOL}
        await send(message)

    return choosing


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if (name == b"content-length" and value.strip() != b"0") or name == b"transfer-encoding":
            return True
    return False


async def _answer(send: Send, refusal: Refused, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    if refusal.status in (408, 413, 421):
        headers.append((b"connection", b"close"))  # the rest of the request is not read
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _too_large(limit: int) -> Refused:
    return Refused(413, "too_large", f"the request body is larger than {limit} bytes", "body")


def _body_length(length: bytes | None, chunked: bool, max_bytes: int) -> int | None:
    """The body's declared length: 0 for none, None for a chunked one."""
    if length is not None:
        return _declared_length(length, max_bytes)
    return None if chunked else 0


def _declared_length(value: bytes, max_bytes: int) -> int:
    try:
        declared = int(value)
    except ValueError:
        raise Refused(400, "invalid", "Content-Length is not a number", "Content-Length") from None
    if declared > max_bytes:
        raise _too_large(max_bytes)
    return declared


def _document(refusal: Refused) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The error document of a refusal, and the headers it goes with."""
    body = json.dumps({"error": refusal.code, "message": str(refusal), "field": refusal.field}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refusal.status == 401:
        headers.append((b"www-authenticate", bearer_challenge(str(refusal)).encode("latin-1")))
    return body, headers


class _BodyLimiter:
    """The body's size cap and deadline for one request.

    When a limit is broken the limiter answers itself (413 or 408, if the app has not
    started its response) and tells the app the client went away; whatever the app
    sends after that is dropped.
    """

    __slots__ = (
        "_body_done",
        "_deadline",
        "_max_bytes",
        "_receive",
        "_received",
        "_send",
        "_started",
        "_timeout_s",
        "refused",
    )

    def __init__(self, receive: Receive, send: Send, max_bytes: int, timeout_s: float) -> None:
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._deadline = asyncio.get_running_loop().time() + timeout_s
        self._received = 0
        self._body_done = False
        self._started = False
        self.refused = False

    async def _refuse(self, refusal: Refused) -> Message:
        if not self._started and not self.refused:
            self.refused = True
            await _answer(self._send, refusal, *_document(refusal))
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
            late = f"the request body did not arrive within {self._timeout_s:g} s"
            return await self._refuse(Refused(408, "timeout", late, "body"))
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._max_bytes:
                return await self._refuse(_too_large(self._max_bytes))
            self._body_done = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self._started = True
        await self._send(message)
