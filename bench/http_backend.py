"""A small HTTP/1.1 backend for benchmark 7: ``GET /`` answers a fixed 13-byte body.

It is what sits behind every proxy the benchmark compares (nginx, herder's router) and
what wrk hits directly for the limit: an ``asyncio.Protocol`` with keep-alive and
pipelining, on uvloop when it can be imported (like herder's agent). Requests are
framed properly: the head up to the blank line, then a ``Content-Length`` body if there
is one (skipped), so keep-alive connections from wrk, nginx or a router stay in step.
A chunked request body is not supported (501, then the connection closes); neither
is a head longer than 16 KiB (431). Any path other than ``/`` gets 404; ``HEAD`` gets
the headers only; an HTTP/1.0 request or ``Connection: close`` closes after the answer.

    python bench/http_backend.py --port 8080        # or PORT=8080 python bench/http_backend.py

It listens on 127.0.0.1 (``--host`` to change), and exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import cast

BODY = b"Hello, herder"  # 13 bytes
MAX_HEAD = 16 * 1024


def response(status: str, body: bytes, *, head_only: bool = False, close: bool = False) -> bytes:
    headers = f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    if close:
        headers += "Connection: close\r\n"
    return headers.encode() + b"\r\n" + (b"" if head_only else body)


OK = response("200 OK", BODY)
OK_CLOSE = response("200 OK", BODY, close=True)
NOT_FOUND = response("404 Not Found", b"not found\n")
BAD_REQUEST = response("400 Bad Request", b"bad request\n", close=True)
TOO_LARGE = response("431 Request Header Fields Too Large", b"head too large\n", close=True)
NOT_IMPLEMENTED = response("501 Not Implemented", b"chunked bodies are not supported\n", close=True)


class Request:
    """What the backend needs to know of one request head."""

    __slots__ = ("body_length", "chunked", "close", "method", "target")

    def __init__(self, method: bytes, target: bytes, body_length: int, chunked: bool, close: bool) -> None:
        self.method = method
        self.target = target
        self.body_length = body_length
        self.chunked = chunked
        self.close = close


def parse_head(head: bytes) -> Request | None:
    """The request line and the headers that frame the request; None if malformed."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    method, target, version = parts
    close = version == b"HTTP/1.0"  # no keep-alive for 1.0 clients: simpler, and nobody here uses it
    body_length = 0
    chunked = False
    lower = head.lower()
    # The common case (wrk's GET) has none of these: skip the per-header loop.
    if b"content-length:" in lower or b"transfer-encoding:" in lower or b"connection:" in lower:
        lengths: set[bytes] = set()
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                return None
            name = name.strip().lower()
            value = value.strip().lower()
            if name == b"content-length":
                lengths.add(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"connection" and b"close" in value:
                close = True
        if len(lengths) > 1:
            return None
        if lengths:
            value = lengths.pop()
            if not value.isdigit():
                return None
            body_length = int(value)
    return Request(method, target, body_length, chunked, close)


class HttpBackend(asyncio.Protocol):
    """One connection: split the requests (pipelined ones too), answer each in order."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while buf:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._finish(out, TOO_LARGE)
                    return
                break
            req = parse_head(bytes(buf[:end]))
            if req is None:
                self._finish(out, BAD_REQUEST)
                return
            if req.chunked:
                self._finish(out, NOT_IMPLEMENTED)
                return
            total = end + 4 + req.body_length
            if len(buf) < total:
                break  # the rest of the body is still on its way
            del buf[:total]
            if req.target != b"/" or req.method not in (b"GET", b"HEAD"):
                answer = NOT_FOUND
            elif req.close:
                answer = OK_CLOSE
            else:
                answer = OK
            if req.method == b"HEAD":
                answer = answer[: answer.index(b"\r\n\r\n") + 4]
            if req.close:
                self._finish(out, answer)
                return
            out.append(answer)
        if out:
            transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _finish(self, out: list[bytes], last: bytes) -> None:
        """Write what is pending and ``last``, then close the connection."""
        assert self._transport is not None
        self._transport.write(b"".join([*out, last]))
        self._transport.close()
        self._buf.clear()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpBackend, host, port, reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: $PORT")
    args = parser.parse_args()
    port = args.port if args.port is not None else os.environ.get("PORT")
    if port is None:
        parser.error("give --port or set $PORT")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, int(port)))
    else:
        uvloop.run(serve(args.host, int(port)))


if __name__ == "__main__":
    main()
