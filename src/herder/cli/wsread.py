"""A WebSocket reader for ``herder logs``: the standard library only, text frames in.

Why not the ``websockets`` package: ``herder logs`` must answer as fast as ``herder ps``,
and it only reads. This client opens the connection (``ws://`` or ``wss://``), reads text
frames, answers the server's pings (uvicorn closes a peer that does not), and closes
politely. Frames it sends are masked, as RFC 6455 requires of a client.

The agent's attach socket sends a process's recent lines first and then live ones, with
no mark between them. ``herder logs`` without ``-f`` must know when the recent lines
have all come: it pings the server right after the handshake, and the server's pong
comes after the recent lines (the agent writes them all as soon as the socket is open,
before it reads the ping); a short quiet time after the pong covers a replay the server
had to pause in. ``ReplayEnd`` holds that rule.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
import time
from urllib.parse import urlsplit

from herder.cli.rest import error_message, fail, tls_context

OPEN_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 64 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class Closed(Exception):
    """The server closed the connection (the process was deleted, or the agent stops)."""


class Pong:
    """The server's answer to our ping (from ``WsReader.next_item``)."""


class WsReader:
    """One WebSocket connection, read frame by frame with a deadline."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        """Connect and do the opening handshake.

        Raises:
            SystemExit: 1, after one line on stderr, when the server refuses (its status
                and message: ``herder: 404: no process with slug 'x' (field: slug)``) or
                cannot be reached.
        """
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if secure else 80)
        try:
            sock = socket.create_connection((host, port), timeout=OPEN_TIMEOUT_S)
            if secure:
                sock = tls_context().wrap_socket(sock, server_hostname=host)
        except OSError as exc:
            fail(f"cannot attach to {url}: {exc}")
        self.sock = sock
        self.buffer = b""
        self._parts: list[bytes] = []  # a fragmented message so far
        key = base64.b64encode(os.urandom(16)).decode()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {parts.netloc.rpartition('@')[2]}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            self._handshake(url, time.monotonic() + OPEN_TIMEOUT_S)
        except OSError as exc:
            self.close()
            fail(f"cannot attach to {url}: {exc}")

    def _handshake(self, url: str, deadline: float) -> None:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEAD_BYTES or not self._fill(deadline):
                fail(f"cannot attach to {url}: no WebSocket handshake from the server")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        if status == 101:
            return
        found = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        length = int(found.get("content-length", "0") or 0)
        while len(self.buffer) < length and self._fill(deadline):
            pass
        body = self.buffer[:length]
        self.close()
        fail(error_message(status, body))

    def _fill(self, deadline: float) -> bool:
        """Read what arrives before ``deadline``; False on timeout. Raises ``Closed`` at EOF."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not data:
            raise Closed
        self.buffer += data
        return True

    def _frame(self) -> tuple[bool, int, bytes] | None:
        """One whole frame from the buffer (fin, opcode, payload), or None if incomplete."""
        buf = self.buffer
        if len(buf) < 2:
            return None
        fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
        masked, length = bool(buf[1] & 0x80), buf[1] & 0x7F
        at = 2
        if length == 126:
            if len(buf) < 4:
                return None
            (length,) = struct.unpack("!H", buf[2:4])
            at = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            (length,) = struct.unpack("!Q", buf[2:10])
            at = 10
        mask = b""
        if masked:  # a server must not mask; read it right anyway
            mask, at = buf[at : at + 4], at + 4
        if len(buf) < at + length:
            return None
        payload = buf[at : at + length]
        if masked:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.buffer = buf[at + length :]
        return fin, opcode, payload

    def send(self, opcode: int, payload: bytes = b"") -> None:
        """Send one masked frame (payloads here are short: pings, pongs, a close)."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def next_item(self, deadline: float | None) -> str | Pong | None:
        """The next text message or pong; None once ``deadline`` (None: no end) passes
        with nothing whole in the buffer. Pings are answered on the way.

        Raises:
            Closed: the server closed the connection.
        """
        while True:
            frame = self._frame()
            if frame is None:
                if deadline is None:
                    self.sock.settimeout(None)
                    data = self.sock.recv(65536)
                    if not data:
                        raise Closed
                    self.buffer += data
                elif not self._fill(deadline):
                    return None
                continue
            fin, opcode, payload = frame
            if opcode == OP_PING:
                self.send(OP_PONG, payload[:125])
            elif opcode == OP_PONG:
                return Pong()
            elif opcode == OP_CLOSE:
                raise Closed
            elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                self._parts.append(payload)
                if fin:
                    message = b"".join(self._parts).decode("utf-8", "replace")
                    self._parts = []
                    return message

    def close(self) -> None:
        """Say goodbye (a close frame, code 1000) and close the socket."""
        with contextlib.suppress(OSError):
            self.send(OP_CLOSE, struct.pack("!H", 1000))
        self.sock.close()


class ReplayEnd:
    """When the recent lines have all come: ``quiet_s`` after the pong with nothing new,
    or ``fallback_s`` with nothing at all (a server that does not answer pings)."""

    def __init__(self, quiet_s: float, fallback_s: float) -> None:
        self.quiet_s = quiet_s
        self.fallback_s = fallback_s
        self.ponged = False
        self.deadline = time.monotonic() + fallback_s

    def saw(self, item: object) -> None:
        """Move the deadline on after a line or the pong."""
        if isinstance(item, Pong):
            self.ponged = True
        self.deadline = time.monotonic() + (self.quiet_s if self.ponged else self.fallback_s)


__all__ = ["Closed", "Pong", "ReplayEnd", "WsReader"]
