"""The proxy's side facing the client: read requests, send them to an instance.

A ``ClientConnection`` is an ``asyncio.Protocol``: the data path runs in callbacks,
with no task and no framework per request, because that is what lets a Python proxy
keep up with nginx's order of magnitude (a FastAPI endpoint serves ~6.6k req/s here,
a byte relay ~62k). Tasks appear only on the slow paths: waiting for an instance to
start, opening a new connection to one.

One exchange at a time: a request's head is parsed strictly (``http1``), checked,
rewritten and sent as soon as it is complete; its body follows as it arrives
(streamed, never buffered whole). Requests pipelined behind it wait, unparsed, until
its response is done. Failures:

* no connection to the instance could be made (it crashed; the request was sent
  nowhere): an idempotent request without a body is tried again, once, preferably on
  another instance, after the failed one passes its readiness check again;
* the instance's connection fails after the request was sent, before any response
  byte: 502 (the instance may have acted on it: sending it again is not ours to decide);
* it fails mid-response: the client's connection is cut (the response cannot be
  completed honestly);
* the client or the instance is silent past its deadline: 408, 504, or a close
  (``ProxyContext.sweep`` checks every connection's deadline once a tick).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from herder.agent.router.http1 import (
    LAST_CHUNK,
    MAX_HEAD_BYTES,
    ChunkedDecoder,
    HttpError,
    RequestHead,
    encode_chunk,
    forwarded_request_head,
    parse_request_head,
    simple_response,
)
from herder.agent.router.pools import Instance, Pool, Unavailable
from herder.agent.router.upstream import UpstreamConnection
from herder.taskgroup import OwnedTaskGroup

log = logging.getLogger(__name__)

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
# Pipelined requests waiting behind the current one, and body bytes waiting for an
# instance to be ready, beyond which the client is not read from.
MAX_WAITING_BYTES = 256 * 1024
ROUTER_STOPPING = "the agent's router is stopping"


@dataclass(slots=True)
class ProxyLimits:
    """The proxy's timeouts and sizes (from ``[router]`` in the agent's config)."""

    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 75.0
    read_timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    max_body_bytes: int = 1024 * 1024 * 1024


@dataclass(slots=True)
class ProxyContext:
    """What every client connection shares: limits, pool lookup, the live set, and the
    task group (the router's, while ``Router.run()`` runs) that owns their slow paths."""

    limits: ProxyLimits
    resolve: Callable[[bytes | None], Pool | None]
    connections: set[ClientConnection] = field(default_factory=set)
    tasks: OwnedTaskGroup | None = None

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run ``coro`` in ``tasks``, its failure logged; None if the router is not running.

        A connection's wait for an instance must not cancel the router's other tasks,
        whatever it raises: a failure is logged and ends that wait only.
        """
        if self.tasks is None:
            coro.close()
            return None
        return self.tasks.spawn(coro, name)

    def sweep(self) -> None:
        """Act on every connection whose deadline has passed."""
        now = time.monotonic()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.timed_out()


class Phase(enum.Enum):
    HEAD = 0  # waiting for a request head
    BODY = 1  # relaying the request's body
    WAIT = 2  # request sent; waiting for the response to finish
    TUNNEL = 3  # upgraded: bytes both ways
    CLOSED = 4


class BodyKind(enum.Enum):
    NONE = 0
    LENGTH = 1
    CHUNKED = 2


# The members as module constants: in Python 3.11 ``Phase.HEAD`` goes through
# ``EnumType.__getattr__`` (~0.25 µs a read, 15 times cheaper as a global), and the data
# path reads them some twenty times a request (#19).
_HEAD, _BODY, _WAIT, _TUNNEL, _CLOSED = Phase.HEAD, Phase.BODY, Phase.WAIT, Phase.TUNNEL, Phase.CLOSED
_NO_BODY, _LENGTH_BODY, _CHUNKED_BODY = BodyKind.NONE, BodyKind.LENGTH, BodyKind.CHUNKED


class Exchange:
    """One request and its response, across retries."""

    __slots__ = (
        "avoid",
        "body_bytes",
        "body_kind",
        "body_left",
        "close_after",
        "decoder",
        "head_bytes",
        "instance",
        "pending",
        "pending_bytes",
        "pool",
        "request",
        "request_done",
        "response_started",
        "retried",
        "retryable",
        "sent",
        "sent_at",
        "upstream",
    )

    def __init__(self, request: RequestHead, pool: Pool) -> None:
        self.request = request
        self.pool = pool
        self.instance: Instance | None = None
        self.upstream: UpstreamConnection | None = None
        self.head_bytes = b""
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.body_kind = _NO_BODY
        self.body_left = 0
        self.body_bytes = 0
        self.decoder: ChunkedDecoder | None = None
        self.request_done = False
        self.response_started = False
        self.close_after = request.close
        self.retryable = False
        self.retried = False
        self.sent = False  # handed to a live connection: the instance may have it
        self.sent_at = 0.0  # time.monotonic() when it was: the pool's upstream latency counts from it
        self.avoid: Instance | None = None


class ClientConnection(asyncio.Protocol):
    """One client's connection to a pool's address (or the agent's, routed by Host)."""

    def __init__(self, ctx: ProxyContext, pool: Pool | None, *, first_data: bytes = b"") -> None:
        self._ctx = ctx
        self.pool = pool  # None: each request's Host picks the pool
        self._first_data = first_data
        self.transport: asyncio.Transport | None = None
        self._phase = _HEAD
        self._buf = b""
        self._exchange: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._read_pauses: set[str] = set()
        self._client_ip = "unknown"
        self._head_started = False
        self._local = b"localhost"
        self._proto = b"http"  # X-Forwarded-Proto: https when the client came over TLS
        limits = ctx.limits
        self.read_timeout_s = limits.read_timeout_s
        self.deadline = math.inf

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._client_ip = str(peer[0])
        if transport.get_extra_info("sslcontext") is not None:
            self._proto = b"https"
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple) and len(local) >= 2:
            ip = str(local[0])
            self._local = (f"[{ip}]" if ":" in ip else ip).encode() + b":%d" % local[1]
        self._ctx.connections.add(self)
        self.deadline = time.monotonic() + self._ctx.limits.header_timeout_s
        if self._first_data:
            data, self._first_data = self._first_data, b""
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase is _TUNNEL:
            exchange = self._exchange
            if exchange is not None and exchange.upstream is not None:
                exchange.upstream.write(data)
            return
        if phase is _BODY:
            data = self._body(data)
            if not data:
                return
        elif phase is _CLOSED:
            return
        if self._buf:
            self._buf += data
        else:
            if not data.startswith(b"\r\n") or self._phase is not _HEAD:
                self._buf = data
            else:
                self._buf = data.lstrip(b"\r\n")  # empty lines between requests are ignored
        if self._phase is _HEAD:
            self._next_request()
        elif len(self._buf) > MAX_WAITING_BYTES:
            self.pause_reading("pipeline")

    def eof_received(self) -> bool:
        if self._phase is _HEAD and not self._buf and self._exchange is None:
            return False  # an idle client left: close
        if self._exchange is not None:
            self._exchange.close_after = True
        return True  # keep writing: the response may still come

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _CLOSED
        self._ctx.connections.discard(self)
        if self._task is not None:
            self._task.cancel()
            self._task = None
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            self._abandon(exchange)

    def pause_writing(self) -> None:
        exchange = self._exchange
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.pause_reading()

    def resume_writing(self) -> None:
        exchange = self._exchange
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.resume_reading()

    # -- reading requests -----------------------------------------------------------------

    def _next_request(self) -> None:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD_BYTES:
            if len(buf) > MAX_HEAD_BYTES:
                self.refuse(431, f"the request head is over {MAX_HEAD_BYTES} bytes")
            elif not self._head_started:
                # A head has begun: it has header_timeout_s to arrive whole.
                self._head_started = True
                self.deadline = time.monotonic() + self._ctx.limits.header_timeout_s
            return
        self._buf = b""
        self._head_started = False
        end += 4
        whole = end == len(buf)  # the usual: the head alone, no copy of it is made
        try:
            request = parse_request_head(buf if whole else buf[:end])
        except HttpError as exc:
            self.refuse(exc.status, str(exc))
            return
        pool = self.pool or self._ctx.resolve(request.host)
        if pool is None:
            self.refuse(421, f"no pool answers for Host {request.host!r} on this connection")
            return
        self._begin(Exchange(request, pool), b"" if whole else buf[end:])

    def _begin(self, exchange: Exchange, rest: bytes) -> None:
        request = exchange.request
        framing: bytes | None = None
        if request.chunked:
            exchange.body_kind = _CHUNKED_BODY
            exchange.decoder = ChunkedDecoder()
            framing = b"transfer-encoding: chunked"
        elif request.content_length is not None:
            length = request.content_length
            if length > self._ctx.limits.max_body_bytes:
                self.refuse(413, f"the request body is over {self._ctx.limits.max_body_bytes} bytes")
                return
            framing = b"content-length: %d" % length
            if length:
                exchange.body_kind = _LENGTH_BODY
                exchange.body_left = length
        if request.upgrade is not None and exchange.body_kind is not _NO_BODY:
            self.refuse(400, "an upgrade request may not carry a body")
            return
        exchange.head_bytes = forwarded_request_head(
            request,
            client_ip=self._client_ip,
            proto=self._proto,
            body_framing=framing,
            default_host=self._local,
        )
        exchange.retryable = (
            request.method in IDEMPOTENT and exchange.body_kind is _NO_BODY and request.upgrade is None
        )
        self._exchange = exchange
        self.deadline = time.monotonic() + self.read_timeout_s
        if exchange.body_kind is _NO_BODY:
            exchange.request_done = True
            self._phase = _WAIT
        else:
            self._phase = _BODY
            if rest:  # body bytes already here are checked before anything goes to an instance
                rest = self._body(rest)
                if self._phase is _CLOSED:
                    return
        self._dispatch(exchange)
        if rest and self._phase is not _CLOSED:
            self._buf = rest
            if len(rest) > MAX_WAITING_BYTES:
                self.pause_reading("pipeline")

    def _body(self, data: bytes) -> bytes:
        """Relay body bytes from ``data``; return what follows the body (pipelined)."""
        exchange = self._exchange
        assert exchange is not None
        self.deadline = time.monotonic() + self.read_timeout_s
        if exchange.body_kind is _LENGTH_BODY:
            left = exchange.body_left
            if len(data) < left:
                exchange.body_left = left - len(data)
                self._send_up(exchange, data)
                return b""
            self._send_up(exchange, data[:left])
            self._request_done(exchange)
            return data[left:]
        decoder = exchange.decoder
        assert decoder is not None
        try:
            pieces, consumed = decoder.feed(data)
        except HttpError as exc:
            self.refuse(exc.status, str(exc))
            return b""
        payload = b"".join(pieces)
        exchange.body_bytes += len(payload)
        if exchange.body_bytes > self._ctx.limits.max_body_bytes:
            self.refuse(413, f"the request body is over {self._ctx.limits.max_body_bytes} bytes")
            return b""
        if payload:
            self._send_up(exchange, encode_chunk(payload))
        if not decoder.done:
            return b""
        self._send_up(exchange, LAST_CHUNK)
        self._request_done(exchange)
        return data[consumed:]

    def _request_done(self, exchange: Exchange) -> None:
        exchange.request_done = True
        if self._phase is _BODY:
            self._phase = _WAIT

    def _send_up(self, exchange: Exchange, data: bytes) -> None:
        if exchange.upstream is not None:
            exchange.upstream.write(data)
            return
        exchange.pending.append(data)
        exchange.pending_bytes += len(data)
        if exchange.pending_bytes > MAX_WAITING_BYTES:
            self.pause_reading("instance")

    # -- finding an instance ----------------------------------------------------------------

    def _dispatch(self, exchange: Exchange) -> None:
        instance = exchange.pool.try_acquire(exchange.avoid)
        if instance is None:
            self._task = self._ctx.spawn(self._acquire(exchange), f"proxy:acquire:{exchange.pool.name}")
            if self._task is None:
                self.refuse(503, ROUTER_STOPPING)
        else:
            self._connect(exchange, instance)

    async def _acquire(self, exchange: Exchange) -> None:
        try:
            instance = await exchange.pool.acquire(exchange.avoid)
        except Unavailable as exc:
            self._task = None
            if self._exchange is exchange:
                self.refuse(503, str(exc), retry_after=exc.retry_after)
            return
        self._task = None
        if self._exchange is not exchange:
            exchange.pool.release(instance)
            return
        self._connect(exchange, instance)

    def _connect(self, exchange: Exchange, instance: Instance) -> None:
        exchange.instance = instance
        conn = instance.take_connection()
        if conn is None:
            self._task = self._ctx.spawn(self._open(exchange, instance), f"proxy:open:{instance.id}")
            if self._task is None:
                self.refuse(503, ROUTER_STOPPING)
        else:
            self._bind(exchange, conn)

    async def _open(self, exchange: Exchange, instance: Instance) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._ctx.limits.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(instance), instance.host, instance.port
                )
        except (OSError, TimeoutError) as exc:
            self._task = None
            if self._exchange is exchange:
                self.upstream_failed(exchange, f"cannot connect to instance {instance.id}: {exc}")
            return
        self._task = None
        if self._exchange is not exchange or self._phase is _CLOSED:
            conn.close()
            return
        self._bind(exchange, conn)

    def _bind(self, exchange: Exchange, conn: UpstreamConnection) -> None:
        exchange.upstream = conn
        exchange.sent = True
        exchange.sent_at = time.monotonic()
        data = [exchange.head_bytes, *exchange.pending] if exchange.pending else [exchange.head_bytes]
        exchange.pending = []
        exchange.pending_bytes = 0
        conn.begin(exchange, self, data)
        if "instance" in self._read_pauses:
            self.resume_reading("instance")

    # -- driven by the upstream connection -------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def response_finished(self, exchange: Exchange) -> None:
        """The response went out whole: next request, or close."""
        if exchange is not self._exchange:
            return
        now = time.monotonic()
        pool = exchange.pool
        pool.latency.observe(now - exchange.sent_at)  # plain integers: see herder.metrics
        instance, exchange.instance = exchange.instance, None
        if instance is not None:
            pool.release(instance, now)
        self._exchange = None
        if exchange.close_after or not exchange.request_done or self._phase is _CLOSED:
            self._close()
            return
        self._phase = _HEAD
        self.deadline = now + self._ctx.limits.keepalive_timeout_s
        if "pipeline" in self._read_pauses:
            self.resume_reading("pipeline")
        if self._buf:
            self._next_request()

    def upstream_failed(self, exchange: Exchange, reason: str, *, retry: bool = True) -> None:
        """The instance's connection failed or broke the protocol during ``exchange``."""
        if exchange is not self._exchange:
            return
        instance = exchange.instance
        exchange.upstream = None
        if instance is not None:
            exchange.pool.suspect(instance)
            self._release(exchange)
        if retry and exchange.retryable and not exchange.retried and not exchange.sent:
            log.info("retrying %s %s after: %s", exchange.request.method, exchange.request.target, reason)
            exchange.retried = True
            exchange.avoid = instance
            self._dispatch(exchange)
            return
        log.warning("proxy: %s", reason)
        if exchange.response_started:
            self._close()  # a response cut short: only closing can tell the client
        else:
            self.refuse(502, reason)

    def start_tunnel(self, exchange: Exchange) -> None:
        """101 Switching Protocols: from now on, bytes both ways."""
        self._phase = _TUNNEL
        self.deadline = math.inf
        rest, self._buf = self._buf, b""
        if rest and exchange.upstream is not None:
            exchange.upstream.write(rest)
        self.resume_reading("pipeline")

    def tunnel_closed(self, exchange: Exchange) -> None:
        if exchange is self._exchange:
            self._release(exchange)
            self._exchange = None
            self._close()

    # -- flow control, ends -----------------------------------------------------------------

    def pause_reading(self, reason: str) -> None:
        if not self._read_pauses and self.transport is not None and self._phase is not _CLOSED:
            self.transport.pause_reading()
        self._read_pauses.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._read_pauses:
            return
        self._read_pauses.discard(reason)
        if not self._read_pauses and self.transport is not None and self._phase is not _CLOSED:
            self.transport.resume_reading()

    def refuse(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        """Answer ``status`` ourselves (if no response has started) and close."""
        exchange, self._exchange = self._exchange, None
        started = False
        if exchange is not None:
            started = exchange.response_started
            self._abandon(exchange)
        if not started and self.transport is not None and not self.transport.is_closing():
            self.transport.write(simple_response(status, message, retry_after=retry_after))
        self._close()

    def timed_out(self) -> None:
        phase = self._phase
        limits = self._ctx.limits
        if phase is _HEAD and not self._buf:
            self._close()  # an idle keep-alive connection
        elif phase is _HEAD:
            self.refuse(408, f"the request head did not arrive within {limits.header_timeout_s:g} s")
        elif phase is _BODY:
            self.refuse(408, f"the request body stalled for {limits.read_timeout_s:g} s")
        elif phase is _WAIT:
            exchange = self._exchange
            if exchange is not None and exchange.instance is None and self._task is not None:
                return  # waiting for an instance: the pool's start timeout applies
            self.refuse(504, f"the instance did not answer within {limits.read_timeout_s:g} s")

    def _release(self, exchange: Exchange) -> None:
        instance, exchange.instance = exchange.instance, None
        if instance is not None:
            exchange.pool.release(instance)

    def _abandon(self, exchange: Exchange) -> None:
        """Give up ``exchange``: its upstream connection cannot be reused, its instance is free."""
        upstream, exchange.upstream = exchange.upstream, None
        if upstream is not None:
            upstream.abort()
        self._release(exchange)

    def _close(self) -> None:
        self._phase = _CLOSED
        self.deadline = math.inf
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        """Close from outside (the pool or the agent is going away)."""
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            self._abandon(exchange)
        self._close()
