"""The agent's own port: the API for the agent, pools for their Hosts.

uvicorn serves the agent's API; this protocol sits in its place and reads the first
request head of each connection. If its ``Host`` names a pool (``<pool>.<anything>``)
the connection is handed to the proxy (``ClientConnection``) for good, the way uvicorn
hands a connection to its WebSocket protocol on an upgrade; otherwise uvicorn parses
it as usual. The API's data path pays one ``find`` per connection for this.

The status reads a monitor polls (``GET /process-status/{slug}``, ``GET
/list-processes``) are answered here when the head is complete, without starting the
ASGI app: ``api.fastreads`` builds the answer under the front door's rules, or says no
and the request goes the usual way. Only a plain keep-alive HTTP/1.1 ``GET`` with no
body is asked about, and only when no earlier request on the connection is still being
answered (answers keep their order) and the client reads what it is sent (the
transport's buffer is under its high-water mark).

``POST /create-process`` too (``api.fastcreate``), under the same conditions, with a
body of declared length: its head admitted, the protocol reads the body itself, has it
validated, and runs the create in a task of its own; requests behind it wait, as they
wait behind uvicorn's answers (the create sits in ``cycle`` until answered). Whatever
the fast path does not take goes to the app as uvicorn would have sent it, with the
body read so far: a body it does not validate, a create that fails once started (the
route answers its exception), a body that has not all come ``BODY_GRACE_S`` after its
head (the rest follows to the app as it comes).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr

from herder.agent.router.client import ClientConnection
from herder.frontdoor import HeadLimitProtocol, protocol_class

if TYPE_CHECKING:
    from herder.agent.api.fastcreate import FastCreate, Ticket
    from herder.agent.api.fastreads import FastReads
    from herder.agent.models import CreateRequest
    from herder.agent.server import AgentRuntime
    from herder.frontdoor import HttpLimits

log = logging.getLogger(__name__)

# Request headers that take a request off the fast path: it has a body, or wants an
# interim answer, or a protocol switch.
_NOT_PLAIN = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})
# What takes a create off the fast path: a body not of declared length, an interim
# answer, a protocol switch.
_NOT_PLAIN_BODY = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
CREATE_PATH = "/create-process"
_CREATE_URL = CREATE_PATH.encode()
# How long after its head a create's body may take to arrive on the fast path; then the
# app reads it (its own deadline for the body starts then).
BODY_GRACE_S = 0.1


class _Answered:
    """What ``cycle`` holds after an answer from the fast path: a finished exchange, as
    uvicorn's protocol expects to find (it reads these two attributes)."""

    response_complete = True
    message_event = asyncio.Event()  # set on connection loss; nobody waits on it


ANSWERED: Any = _Answered()


class _Creating:
    """A create taken on the fast path: its body as it comes, then the create on its way.

    It stands in ``cycle`` until answered, as an unfinished exchange, so that the
    requests behind it wait (uvicorn reads ``response_complete``, and sets
    ``keep_alive`` on shutdown and ``disconnected`` when the connection is lost).
    """

    __slots__ = (
        "disconnected",
        "keep_alive",
        "parts",
        "response_complete",
        "scope",
        "ticket",
        "timer",
    )

    message_event = _Answered.message_event

    def __init__(self, scope: Any, ticket: Ticket) -> None:
        self.scope = scope
        self.ticket = ticket
        self.parts: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None
        self.response_complete = False
        self.keep_alive = True
        self.disconnected = False


def host_header(head: bytes) -> bytes | None:
    """The single ``Host`` header's value in a request head, or None (none, or several)."""
    lower = head.lower()
    start = lower.find(b"\r\nhost:")
    if start < 0 or lower.find(b"\r\nhost:", start + 7) >= 0:
        return None
    end = head.find(b"\r\n", start + 7)
    return head[start + 7 : end if end >= 0 else len(head)].strip(b" \t")


class FrontProtocol(HeadLimitProtocol):
    """uvicorn's protocol, after a look at the first request's Host."""

    runtime: AgentRuntime
    fast_reads: FastReads | None = None
    fast_create: FastCreate | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._routing = self.runtime.router is not None and bool(self.runtime.router.pools)
        self._first = b""
        self._reading: _Creating | None = None  # a create on the fast path, reading its body
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._route(data)
        creating = self._reading
        if creating is not None and creating.timer is None:  # a create's body still to come
            creating.timer = self.loop.call_later(BODY_GRACE_S, self._body_late)

    def _route(self, data: bytes) -> None:
        if not self._routing:
            super().data_received(data)
            return
        buf = self._first + data if self._first else data
        end = buf.find(b"\r\n\r\n")
        if end < 0 and len(buf) <= self.max_header_bytes:
            self._first = buf
            return
        self._routing = False
        self._first = b""
        router = self.runtime.router
        assert router is not None
        pool = router.pool_for_host(host_header(buf[:end])) if end >= 0 else None
        if pool is None:
            super().data_received(buf)
            return
        self._hand_over(buf)

    def _hand_over(self, data: bytes) -> None:
        """Give the connection to the proxy, as uvicorn does on a WebSocket upgrade."""
        self.connections.discard(self)
        self._disarm_header_deadline()
        self._unset_keepalive_if_required()
        assert self.runtime.router is not None
        proxy = ClientConnection(self.runtime.router.context, None, first_data=data)
        self.transport.set_protocol(proxy)
        proxy.connection_made(self.transport)

    def on_headers_complete(self) -> None:
        if self.fast_reads is not None and self._answer_fast(self.fast_reads):
            return
        if self.fast_create is not None and self.url == _CREATE_URL and self._begin_create(self.fast_create):
            return
        super().on_headers_complete()

    def _first_in_line(self) -> bool:
        """Whether an answer may be written now, with nothing before it, at once."""
        if (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            return False  # an earlier answer is still on its way
        if self.flow.write_paused or self.transport.is_closing():
            return False
        limit = self.limit_concurrency
        return limit is None or (len(self.connections) < limit and len(self.tasks) < limit)  # else 503

    def _answer_fast(self, fast: FastReads) -> bool:
        """Answer a status read here (True), or leave it to uvicorn (False)."""
        url: bytes = self.url
        if (
            not url.startswith(b"/")
            or b"?" in url
            or b"%" in url
            or b"#" in url
            or not url.isascii()
            or not fast.wanted(path := url.decode("ascii"))
        ):
            return False
        parser = self.parser
        if parser.get_method() != b"GET" or parser.get_http_version() != "1.1":
            return False
        if not parser.should_keep_alive():
            return False
        if not self._first_in_line() or any(name in _NOT_PLAIN for name, _ in self.headers):
            return False
        scope = self.scope
        scope["method"] = "GET"
        scope["path"] = path
        scope["raw_path"] = url
        scope["query_string"] = b""
        try:
            answer = fast.answer(scope)
        except Exception:  # the usual way answers it (500 if it fails there too)
            log.debug("status fast path: left to the app", exc_info=True)
            return False
        if answer is None:
            return False
        self._in_headers = False
        self._disarm_header_deadline()
        head = [STATUS_LINE[200]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(answer)
        if self.access_log:  # as uvicorn's own line for the request
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d', get_client_addr(scope), "GET", path, "1.1", 200
            )
        self.transport.write(b"".join(head))
        self.cycle = ANSWERED
        self.on_response_complete()
        return True

    # -- creates ------------------------------------------------------------------------

    def _begin_create(self, fast: FastCreate) -> bool:
        """Take a create's head (True): its body is read here, then the create run; or
        leave it to uvicorn (False)."""
        parser = self.parser
        if parser.get_method() != b"POST" or parser.get_http_version() != "1.1":
            return False
        if not parser.should_keep_alive() or not self._first_in_line():
            return False
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return False
                length = int(value)
            elif name in _NOT_PLAIN_BODY:
                return False
        if not length:
            return False  # no body, or an empty one: the route's error
        scope: Any = self.scope
        scope["method"] = "POST"
        scope["path"] = CREATE_PATH
        scope["raw_path"] = _CREATE_URL
        scope["query_string"] = b""
        try:
            ticket = fast.admit(scope)
        except Exception:  # the usual way answers it (500 if it fails there too)
            log.debug("create fast path: left to the app", exc_info=True)
            return False
        if ticket is None:
            return False
        self._in_headers = False
        self._disarm_header_deadline()
        self._reading = creating = _Creating(scope, ticket)
        self.cycle = creating  # type: ignore[assignment]
        return True

    def on_body(self, body: bytes) -> None:
        creating = self._reading
        if creating is None:
            super().on_body(body)
            return
        creating.parts.append(body)

    def on_message_complete(self) -> None:
        creating = self._reading
        if creating is None:
            super().on_message_complete()
            return
        self._reading = None
        if creating.timer is not None:
            creating.timer.cancel()
        body = b"".join(creating.parts)
        creating.parts = []
        fast = self.fast_create
        assert fast is not None
        try:
            req = fast.read(body)
        except Exception:
            log.debug("create fast path: left to the app", exc_info=True)
            req = None
        if req is None:
            self._to_app(creating, body, more_body=False)
            return
        task = self.loop.create_task(self._create(fast, creating, req, body))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _body_late(self) -> None:
        """The body has not all come within ``BODY_GRACE_S``: the app reads the rest."""
        creating = self._reading
        if creating is None:
            return
        creating.timer = None
        self._reading = None
        body = b"".join(creating.parts)
        creating.parts = []
        self._to_app(creating, body, more_body=True)

    def _to_app(self, creating: _Creating, body: bytes, *, more_body: bool) -> None:
        """Send the create to the app, as uvicorn would have, with its body so far."""
        cycle = RequestResponseCycle(
            scope=creating.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=creating.keep_alive,
            on_response=self.on_response_complete,
        )
        cycle.disconnected = creating.disconnected
        cycle.body = bytearray(body)
        cycle.more_body = more_body
        if body or not more_body:
            cycle.message_event.set()
        if self.cycle is creating:  # type: ignore[comparison-overlap]
            self.cycle = cycle
        self._start_asgi_task(cycle, self.app)

    async def _create(self, fast: FastCreate, creating: _Creating, req: CreateRequest, body: bytes) -> None:
        """Run the create and write its answer; a failure is answered by the route."""
        from herder.agent.api.routes import CREATE_FAILED

        try:
            answer = await fast.create(creating.scope, req, creating.ticket)
        except Exception as exc:
            if self.transport.is_closing():
                return  # the client is gone: nobody to answer
            creating.scope[CREATE_FAILED] = exc
            self._to_app(creating, body, more_body=False)
            return
        if self.flow.write_paused and not creating.disconnected:
            await self.flow.drain()
        creating.response_complete = True
        if creating.disconnected or self.transport.is_closing():
            return
        head = [STATUS_LINE[201]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        if not creating.keep_alive:  # the server is shutting down
            head.append(b"connection: close\r\n")
        head.append(answer)
        if self.access_log:  # as uvicorn's own line for the request
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(creating.scope),
                "POST",
                CREATE_PATH,
                "1.1",
                201,
            )
        self.transport.write(b"".join(head))
        if not creating.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        creating = self._reading
        if creating is not None:
            self._reading = None
            creating.disconnected = True
            if creating.timer is not None:
                creating.timer.cancel()
        super().connection_lost(exc)


def front_protocol(
    limits: HttpLimits, runtime: AgentRuntime, app: object | None = None
) -> type[FrontProtocol]:
    """A protocol class for uvicorn (it takes a class) with the front door's head limits,
    bound to ``runtime``'s router; with ``app``, the agent's outermost ASGI app
    (``HttpCounts`` around its ``Guard``), the status reads and the creates are answered on
    the fast path."""
    from herder.frontdoor import Door
    from herder.metrics import HttpCounts

    fast = create = None
    counts = app if isinstance(app, HttpCounts) else None
    door = counts.app if counts is not None else app
    if isinstance(door, Door):
        from herder.agent.api.fastcreate import FastCreate
        from herder.agent.api.fastreads import FastReads

        fast = FastReads(runtime.supervisor, door, counts)
        create = FastCreate(runtime, door, counts, limits.max_json_depth)
    protocol = protocol_class(limits, FrontProtocol, runtime=runtime, fast_reads=fast, fast_create=create)
    assert issubclass(protocol, FrontProtocol)
    return protocol
