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
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE
from uvicorn.protocols.utils import get_client_addr

from herder.agent.router.client import ClientConnection
from herder.frontdoor import HeadLimitProtocol, protocol_class

if TYPE_CHECKING:
    from herder.agent.api.fastreads import FastReads
    from herder.agent.server import AgentRuntime
    from herder.frontdoor import HttpLimits

log = logging.getLogger(__name__)

# Request headers that take a request off the fast path: it has a body, or wants an
# interim answer, or a protocol switch.
_NOT_PLAIN = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})


class _Answered:
    """What ``cycle`` holds after an answer from the fast path: a finished exchange, as
    uvicorn's protocol expects to find (it reads these two attributes)."""

    response_complete = True
    message_event = asyncio.Event()  # set on connection loss; nobody waits on it


ANSWERED: Any = _Answered()


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

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._routing = self.runtime.router is not None and bool(self.runtime.router.pools)
        self._first = b""
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
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
        super().on_headers_complete()

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
        if (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            return False  # an earlier answer is still on its way
        if self.flow.write_paused or self.transport.is_closing():
            return False
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            return False  # uvicorn answers 503
        if any(name in _NOT_PLAIN for name, _ in self.headers):
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


def front_protocol(
    limits: HttpLimits, runtime: AgentRuntime, app: object | None = None
) -> type[FrontProtocol]:
    """A protocol class for uvicorn (it takes a class) with the front door's head limits,
    bound to ``runtime``'s router; with ``app``, the agent's outermost ASGI app
    (``HttpCounts`` around its ``Guard``), the status reads are answered on the fast path."""
    from herder.frontdoor import Door
    from herder.metrics import HttpCounts

    fast = None
    counts = app if isinstance(app, HttpCounts) else None
    door = counts.app if counts is not None else app
    if isinstance(door, Door):
        from herder.agent.api.fastreads import FastReads

        fast = FastReads(runtime.supervisor, door, counts)
    protocol = protocol_class(limits, FrontProtocol, runtime=runtime, fast_reads=fast)
    assert issubclass(protocol, FrontProtocol)
    return protocol
