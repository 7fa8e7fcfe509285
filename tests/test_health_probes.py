"""One health check against real servers on loopback, hostile ones included (issue 16).

A server that streams an endless body, sends an endless first line, never answers or
answers garbage costs the check a bounded read and its timeout, never more.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from herder.agent.health import probes

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server on 127.0.0.1:0 running ``handler``; yields its port and the request heads."""
    heads: list[bytes] = []
    clients: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[object]] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clients.append(writer)
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            await handler(reader, writer)
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], heads
    finally:
        server.close()
        for writer in clients:  # Python 3.11 has no Server.close_clients()
            writer.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)  # each handler saw its end
        await server.wait_closed()


def answer(data: bytes) -> Handler:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    return handler


async def endless(first: bytes, chunk: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(first)
    for _ in range(100_000):  # bounded: ~100 MB at most, far past what a check reads
        writer.write(chunk)
        await writer.drain()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\n", None),
        (b"HTTP/1.0 204 No Content\r\n\r\n", None),
        (b"HTTP/1.1 301 Moved\r\nLocation: http://169.254.169.254/\r\n\r\n", None),  # not followed
        (b"HTTP/1.1 404 Not Found\r\n\r\n", "GET /h: HTTP 404"),
        (b"HTTP/1.1 500 Oops\r\n\r\n", "GET /h: HTTP 500"),
        (b"SSH-2.0-OpenSSH\r\n", "GET /h: not an HTTP answer (SSH-2.0-OpenSSH)"),
        (b"", "GET /h: not an HTTP answer ()"),
    ],
)
async def test_http_status_lines(status: bytes, error: str | None) -> None:
    async with serving(answer(status)) as (port, heads):
        assert await probes.check_http(port, "/h", 2.0) == error
    assert heads[0].startswith(b"GET /h HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_an_endless_body_is_not_read() -> None:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await endless(b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 65536, writer)

    async with serving(handler) as (port, _):
        began = time.monotonic()
        assert await probes.check_http(port, "/", 5.0) is None
        assert time.monotonic() - began < 1.0


async def test_an_endless_first_line_fails_after_a_bounded_read() -> None:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await endless(b"HTTP/1.1 200 ", b"y" * 65536, writer)

    async with serving(handler) as (port, _):
        error = await probes.check_http(port, "/", 5.0)
    assert error == "GET /: no status line in the first 1024 bytes"


async def test_a_server_that_never_answers_times_out() -> None:
    never = asyncio.Event()

    async def handler(_: asyncio.StreamReader, __: asyncio.StreamWriter) -> None:
        await never.wait()

    async with serving(handler) as (port, _):
        assert await probes.check_http(port, "/", 0.2) == "GET /: no answer within 0.2 s"
        never.set()


async def test_tcp_passes_on_a_listener_and_fails_on_a_closed_port() -> None:
    async with serving(answer(b"")) as (port, _):
        assert await probes.check_tcp(port, 1.0) is None
    assert await probes.check_tcp(port, 1.0) == f"cannot connect to port {port}: Connection refused"
