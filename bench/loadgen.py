"""Load generator of benchmark 4: one client, one connection, requests back to back.

Why one small program for the three daemons: the figure must measure the daemon, not
the client. So every daemon is asked by the same interpreter (``.bench-venv``'s), with
the leanest client its protocol allows:

* ``http`` (herder, the bare FastAPI app): a raw HTTP/1.1 GET over one keep-alive TCP
  connection, the request bytes built once, the answer parsed just enough to find its
  end (Content-Length or chunked);
* ``xmlrpc`` (supervisord): the same, as a POST of a prebuilt XML-RPC body over its unix
  socket (what ``supervisorctl`` speaks), reconnecting if the server closes;
* ``circus``: Circus's own ``CircusClient`` over ZeroMQ (what ``circusctl`` uses).

The first answer is fully decoded and checked, so a wrong URL or method cannot pass
for a fast one; the others are only framed, unless ``--decode`` is given: then every
answer is decoded as a client library would (``json.loads``, ``xmlrpc.client.loads``;
``CircusClient`` always decodes), which adds each protocol's own client-side cost.
Several of these processes started with the same ``--start-at`` measure the same
window, for the concurrent variant.

Prints one JSON line: requests, seconds, latency percentiles (ms) and reconnects.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
import xmlrpc.client
from collections.abc import Callable
from typing import Any


class HttpConnection:
    """Just enough HTTP/1.1 to send one prebuilt request and frame its answer."""

    def __init__(self, address: tuple[str, int] | str, request: bytes) -> None:
        self.address = address
        self.request = request
        self.reconnects = -1
        self._sock: socket.socket | None = None
        self._buf = b""

    def _connect(self) -> socket.socket:
        family = socket.AF_UNIX if isinstance(self.address, str) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self.address)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reconnects += 1
        self._buf = b""
        self._sock = sock
        return sock

    def _recv(self, sock: socket.socket) -> None:
        data = sock.recv(262144)
        if not data:
            raise ConnectionError("the server closed the connection mid-answer")
        self._buf += data

    def roundtrip(self) -> tuple[int, bytes]:
        """Send the request; return the status and the body."""
        sock = self._sock or self._connect()
        sock.sendall(self.request)
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            self._recv(sock)
        head, self._buf = self._buf[:end].decode("latin-1"), self._buf[end + 4 :]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if "content-length" in headers:
            size = int(headers["content-length"])
            while len(self._buf) < size:
                self._recv(sock)
            body, self._buf = self._buf[:size], self._buf[size:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked(sock)
        else:  # delimited by the end of the connection
            while data := sock.recv(262144):
                self._buf += data
            body, self._buf = self._buf, b""
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close" or lines[0].startswith("HTTP/1.0"):
            sock.close()
            self._sock = None
        return status, body

    def _read_chunked(self, sock: socket.socket) -> bytes:
        parts: list[bytes] = []
        while True:
            while (eol := self._buf.find(b"\r\n")) < 0:
                self._recv(sock)
            size = int(self._buf[:eol].split(b";")[0], 16)
            while len(self._buf) < eol + 2 + size + 2:
                self._recv(sock)
            parts.append(self._buf[eol + 2 : eol + 2 + size])
            self._buf = self._buf[eol + 2 + size + 2 :]
            if size == 0:
                return b"".join(parts)


def http_caller(target: str, path: str, decode: bool) -> tuple[Callable[[], None], Callable[[], int]]:
    host, port = target.rsplit(":", 1)
    request = f"GET {path} HTTP/1.1\r\nHost: {target}\r\nAccept: application/json\r\n\r\n".encode()
    conn = HttpConnection((host, int(port)), request)
    status, body = conn.roundtrip()
    if status != 200:
        raise SystemExit(f"GET {path}: {status} {body[:300]!r}")
    json.loads(body)

    def call() -> None:
        conn.roundtrip()

    def call_decoding() -> None:
        json.loads(conn.roundtrip()[1])

    return (call_decoding if decode else call), lambda: conn.reconnects


def xmlrpc_caller(
    socket_path: str, method: str, params: list[Any], decode: bool
) -> tuple[Callable[[], None], Callable[[], int]]:
    body = xmlrpc.client.dumps(tuple(params), method).encode()
    request = (
        b"POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    conn = HttpConnection(socket_path, request)
    status, answer = conn.roundtrip()
    if status != 200:
        raise SystemExit(f"{method}: {status} {answer[:300]!r}")
    xmlrpc.client.loads(answer)  # raises Fault on an error answer

    def call() -> None:
        conn.roundtrip()

    def call_decoding() -> None:
        xmlrpc.client.loads(conn.roundtrip()[1])

    return (call_decoding if decode else call), lambda: conn.reconnects


def circus_caller(endpoint: str, message: dict[str, Any]) -> tuple[Callable[[], None], Callable[[], int]]:
    from circus.client import CircusClient

    client = CircusClient(endpoint=endpoint, timeout=30)
    answer = client.call(dict(message))
    if answer.get("status") == "error":  # "status" is also where a watcher's status is answered
        raise SystemExit(f"circus {message}: {answer}")

    def call() -> None:
        client.call(dict(message))

    return call, lambda: 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["http", "xmlrpc", "circus"])
    parser.add_argument("target", help="host:port, a unix socket path, or a ZeroMQ endpoint")
    parser.add_argument("what", help="URL path, XML-RPC method, or Circus message (JSON)")
    parser.add_argument("--params", default="[]", help="XML-RPC parameters (JSON list)")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--start-at", type=float, default=0.0, help="time.time() to begin at")
    parser.add_argument("--decode", action="store_true", help="decode every answer, not only the first")
    args = parser.parse_args()
    if args.kind == "http":
        call, reconnects = http_caller(args.target, args.what, args.decode)
    elif args.kind == "xmlrpc":
        call, reconnects = xmlrpc_caller(args.target, args.what, json.loads(args.params), args.decode)
    else:
        call, reconnects = circus_caller(args.target, json.loads(args.what))
    for _ in range(20):  # warm both ends up
        call()
    if args.start_at:
        time.sleep(max(0.0, args.start_at - time.time()))
    latencies: list[float] = []
    t0 = time.perf_counter()
    end = t0 + args.seconds
    now = t0
    while now < end:
        call()
        done = time.perf_counter()
        latencies.append(done - now)
        now = done
    elapsed = now - t0
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000

    result = {
        "requests": len(latencies),
        "seconds": elapsed,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "reconnects": reconnects(),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
