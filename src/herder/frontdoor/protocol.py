"""The request head's bounds, enforced in uvicorn's protocol before any ASGI code runs.

uvicorn bounds idle keep-alive connections, but neither a client that opens a
connection and then dribbles its head one byte at a time, nor one that sends megabytes
of headers (httptools buffers them all before the app sees the request). This protocol
closes the first at ``header_timeout_s`` and answers the second 431 as soon as the
head passes ``max_header_bytes``, without buffering the rest.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from herder.frontdoor.limits import DEFAULT_MAX_HEADER_BYTES, HttpLimits

# After a 431, the rest of the head is read and dropped this long before the connection
# closes: closing with unread data would reset it, and many clients then lose the answer.
LINGER_S = 1.0


def _head_too_large(limit: int) -> bytes:
    body = json.dumps(
        {
            "error": "too_large",
            "message": f"the request's line and headers are larger than {limit} bytes",
            "field": "headers",
        }
    ).encode()
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class HeadLimitProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size cap on request heads.

    The class attributes are the limits (uvicorn takes a class, not an instance:
    ``protocol_class`` makes one per server).
    """

    header_timeout_s: float = 10.0
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    _too_large_answer: bytes = _head_too_large(DEFAULT_MAX_HEADER_BYTES)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_headers = True
        self._lingering: asyncio.TimerHandle | None = None
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
            if self._header_bytes > self.max_header_bytes:
                self._refuse_head()
                return
        elif self._lingering is not None:
            return  # the rest of a refused head
        super().data_received(data)

    def _refuse_head(self) -> None:
        """Answer 431, send nothing more, drop what still comes for ``LINGER_S``, close."""
        self._in_headers = False
        self._disarm_header_deadline()
        if self.transport.is_closing():
            return
        self.transport.write(self._too_large_answer)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = self.loop.call_later(LINGER_S, self.transport.close)

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
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)


def protocol_class(
    limits: HttpLimits, base: type[HeadLimitProtocol] = HeadLimitProtocol, **attributes: object
) -> type[HeadLimitProtocol]:
    """A subclass of ``base`` carrying ``limits`` (and ``attributes``), for ``uvicorn.Config(http=...)``."""
    return type(
        base.__name__,
        (base,),
        {
            "header_timeout_s": limits.header_timeout_s,
            "max_header_bytes": limits.max_header_bytes,
            "_too_large_answer": _head_too_large(limits.max_header_bytes),
            **attributes,
        },
    )
