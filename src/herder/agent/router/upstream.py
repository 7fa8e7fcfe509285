"""The proxy's connection to one instance: sends requests, relays responses.

One ``UpstreamConnection`` carries one exchange at a time and, when the response was
complete and both sides allow it, goes back to its instance's idle list for the next
request (keep-alive). It reads the response head strictly (``http1``), rewrites it for
the client (hop-by-hop headers dropped, its own framing) and relays the body as it
arrives: by length, chunk by chunk (decoded and encoded again, so that a malformed
body from an instance cannot desynchronise the client's connection), or until the
instance closes. A ``101 Switching Protocols`` turns both connections into a tunnel;
such a connection, and one that answered an upgrade with anything else, is never
reused.
"""

from __future__ import annotations

import asyncio
import enum
import select
import time
from typing import TYPE_CHECKING, cast

from herder.agent.router.http1 import (
    LAST_CHUNK,
    MAX_HEAD_BYTES,
    ChunkedDecoder,
    HttpError,
    ResponseHead,
    encode_chunk,
    forwarded_response_head,
    parse_response_head,
    response_has_body,
)

if TYPE_CHECKING:
    from herder.agent.router.client import ClientConnection, Exchange
    from herder.agent.router.pools import Instance


# Any of these on an idle connection means it cannot carry a request: the instance
# closed it (or died), or sent bytes nobody asked for.
_NOT_IDLE = select.POLLIN | select.POLLPRI | select.POLLRDHUP | select.POLLHUP | select.POLLERR


class Phase(enum.Enum):
    IDLE = 0
    HEAD = 1
    LENGTH = 2
    CHUNKED = 3
    UNTIL_CLOSE = 4
    TUNNEL = 5


# The members as module constants: in Python 3.11 ``Phase.HEAD`` goes through
# ``EnumType.__getattr__`` (~0.25 µs a read, 15 times cheaper as a global) (#19).
_IDLE, _HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE, _TUNNEL = (
    Phase.IDLE,
    Phase.HEAD,
    Phase.LENGTH,
    Phase.CHUNKED,
    Phase.UNTIL_CLOSE,
    Phase.TUNNEL,
)


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection from the proxy to one instance."""

    __slots__ = (
        "_buf",
        "_chunked_out",
        "_closed",
        "_decoder",
        "_keep",
        "_left",
        "_phase",
        "_poller",
        "client",
        "exchange",
        "instance",
        "transport",
    )

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.transport: asyncio.Transport | None = None
        self.client: ClientConnection | None = None
        self.exchange: Exchange | None = None
        self._buf = b""
        self._phase = _IDLE
        self._left = 0
        self._decoder: ChunkedDecoder | None = None
        self._chunked_out = False
        self._keep = False
        self._closed = False
        self._poller: select.poll | None = None  # on the connection's socket: see reusable()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._poller = select.poll()
            self._poller.register(sock.fileno(), _NOT_IDLE)

    def data_received(self, data: bytes) -> None:
        client = self.client
        phase = self._phase
        if client is None or phase is _IDLE:
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        if phase is _TUNNEL:
            client.write(data)
            return
        client.deadline = time.monotonic() + client.read_timeout_s
        if phase is _LENGTH:
            left = self._left
            if len(data) < left:
                self._left = left - len(data)
                client.write(data)
            else:
                client.write(data[:left])
                self._finish(data[left:])
        elif phase is _HEAD:
            self._head_bytes(data)
        else:
            self._body(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.instance.forget_connection(self)
        client, exchange = self.client, self.exchange
        if client is None or exchange is None:
            return
        phase = self._phase
        if phase is _UNTIL_CLOSE:
            if self._chunked_out:
                client.write(LAST_CHUNK)
            self._keep = False
            self._finish(b"")
        elif phase is _TUNNEL:
            self.client = self.exchange = None
            client.tunnel_closed(exchange)
        else:
            self.client = self.exchange = None
            reason = f"instance {self.instance.id} closed the connection"
            client.upstream_failed(exchange, reason + (f" ({exc})" if exc else ""))

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading("upstream")

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading("upstream")

    # -- driven by the client connection -------------------------------------------------------

    def reusable(self) -> bool:
        """True if the connection is open and quiet, so a request sent on it is received.

        The event loop may not have run the callback that reports the instance's FIN
        yet (the instance was just killed, or closed an idle connection): a ``poll``
        with no timeout (~1 us, on a poll object made once per connection) sees it now,
        so the request goes on a fresh connection instead of being lost on a dead one.
        """
        if self._closed or self.transport is None or self.transport.is_closing():
            return False
        if self._poller is not None and self._poller.poll(0):
            self.close()
            return False
        return True

    def begin(self, exchange: Exchange, client: ClientConnection, data: list[bytes]) -> None:
        """Carry ``exchange``: write its head (and the body received so far)."""
        assert self.transport is not None
        self.exchange = exchange
        self.client = client
        self._phase = _HEAD
        self._buf = b""
        if len(data) == 1:
            self.transport.write(data[0])
        else:
            self.transport.writelines(data)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()

    def close(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection without relaying anything more (the client is gone)."""
        self.client = self.exchange = None
        self._closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- the response -----------------------------------------------------------------------

    def _head_bytes(self, data: bytes) -> None:
        client, exchange = self.client, self.exchange
        assert client is not None
        assert exchange is not None
        buf = self._buf + data if self._buf else data
        received: bytes | None = buf  # head + rest, while the head is the first in buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0 or end > MAX_HEAD_BYTES:
                if len(buf) > MAX_HEAD_BYTES:
                    self._fail(f"instance {self.instance.id} sent a response head over {MAX_HEAD_BYTES} B")
                else:
                    self._buf = buf
                return
            end += 4
            try:
                head = parse_response_head(buf if end == len(buf) else buf[:end])
            except HttpError as exc:
                self._fail(f"instance {self.instance.id}: {exc}")
                return
            buf = buf[end:] if end < len(buf) else b""
            if head.status >= 200 or head.status == 101:
                break
            client.write(forwarded_response_head(head, body_framing=None, close=False))  # 100 Continue...
            received = None
        self._buf = b""
        self._start_response(head, buf, received)

    def _start_response(self, head: ResponseHead, rest: bytes, received: bytes | None = None) -> None:
        """Relay ``head`` and what of the body is in ``rest``; ``received`` is head + rest
        as one buffer, if it is one (written as it is when nothing of it changes)."""
        client, exchange = self.client, self.exchange
        assert client is not None
        assert exchange is not None
        request = exchange.request
        if head.status == 101:
            if request.upgrade is None or head.upgrade is None:
                self._fail(f"instance {self.instance.id} switched protocols without being asked to")
                return
            self._phase = _TUNNEL
            exchange.response_started = True
            client.write(forwarded_response_head(head, body_framing=None, close=False) + rest)
            client.start_tunnel(exchange)
            return
        close = exchange.close_after or request.upgrade is not None or not exchange.request_done
        framing: bytes | None
        length = head.content_length
        if not response_has_body(request.method, head.status):
            phase = _IDLE
            framing = b"content-length: %d" % length if length is not None and head.status >= 200 else None
        elif head.chunked or length is None:
            phase = _CHUNKED if head.chunked else _UNTIL_CLOSE
            self._decoder = ChunkedDecoder() if head.chunked else None
            self._chunked_out = request.http11
            framing = b"transfer-encoding: chunked" if request.http11 else None
            close = close or not request.http11
        else:
            phase = _LENGTH
            framing = b"content-length: %d" % length
        self._keep = not head.close and phase is not _UNTIL_CLOSE and request.upgrade is None
        exchange.close_after = close
        out = forwarded_response_head(head, body_framing=framing, close=close)
        exchange.response_started = True
        if phase is _IDLE:
            client.write(out)
            self._finish(rest)
        elif phase is _LENGTH:
            assert length is not None
            if len(rest) == length and out is head.raw and received is not None:
                client.write(received)  # the usual: the whole response, as the instance sent it
                self._finish(b"")
                return
            left = length
            body = rest[:left]
            client.write(out + body if len(body) < 65536 else out)
            if len(body) >= 65536:
                client.write(body)
            self._left = left - len(body)
            if self._left == 0:
                self._finish(rest[left:])
            else:
                self._phase = phase
        else:
            client.write(out)
            self._phase = phase
            if rest:
                self._body(rest)

    def _body(self, data: bytes) -> None:
        client = self.client
        assert client is not None
        if self._phase is _UNTIL_CLOSE:
            client.write(encode_chunk(data) if self._chunked_out else data)
            return
        decoder = self._decoder
        assert decoder is not None
        try:
            pieces, consumed = decoder.feed(data)
        except HttpError as exc:
            self._fail(f"instance {self.instance.id} sent a malformed chunked body: {exc}")
            return
        payload = b"".join(pieces)
        if payload:
            client.write(encode_chunk(payload) if self._chunked_out else payload)
        if decoder.done:
            if self._chunked_out:
                client.write(LAST_CHUNK)
            self._finish(data[consumed:])

    def _finish(self, extra: bytes) -> None:
        """The response is complete: hand the connection back (or close it)."""
        client, exchange = self.client, self.exchange
        assert client is not None
        assert exchange is not None
        reusable = self._keep and not extra and exchange.request_done and not self._closed
        self._phase = _IDLE
        self.client = self.exchange = None
        self._decoder = None
        if reusable:
            self.instance.put_connection(self)
        else:
            self.close()
        client.response_finished(exchange)

    def _fail(self, reason: str) -> None:
        """The instance broke the protocol: 502 (or a cut connection) and no reuse."""
        client, exchange = self.client, self.exchange
        self.client = self.exchange = None
        self.close()
        if client is not None and exchange is not None:
            client.upstream_failed(exchange, reason, retry=False)
