"""Raw HTTP on a socket, for the front door's regression modules: what a hostile client
sends is not what an HTTP client library lets one send."""

from __future__ import annotations

import asyncio
import contextlib
import socket


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").removeprefix("ws://").split("/", 1)[0].rsplit(":", 1)
    return host.strip("[]"), int(port)


async def exchange(url: str, data: bytes, timeout_s: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; all that came back until the server closed it.

    A server that answers before reading the whole request and then closes makes the
    kernel reset the connection; what it sent before is still read (asyncio's streams
    would drop it), so this speaks to the socket itself.

    Raises:
        TimeoutError: the server kept the connection open past ``timeout_s``.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in address(url)[0] else socket.AF_INET)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address(url))
        with contextlib.suppress(ConnectionError):
            await loop.sock_sendall(sock, data)
        answer = b""
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    chunk = await loop.sock_recv(sock, 65536)
                except ConnectionResetError:
                    return answer
                if not chunk:
                    return answer
                answer += chunk
    finally:
        sock.close()
