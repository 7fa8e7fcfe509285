"""The router's proxy end to end (issue 4): real agent, real instances, real sockets.

A pool of ``tests/apps/pool_app.py`` instances is reached on its own listen address
and, by ``Host: <pool>.localhost``, on the agent's port. Where the exact bytes matter
(smuggling, framing, pipelining, limits) the tests speak HTTP over raw sockets;
elsewhere they use httpx and aiohttp. Pool lifecycle (cold starts, crashes, drain,
idle) is ``test_pools.py``'s subject, not this file's: here the pool keeps one
instance running and the tests look at what crosses the proxy.

Every read has a deadline; nothing sleeps for time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import pytest_asyncio

from herder.agent import Agent
from tests.conftest import AgentFactory, fast_config
from tests.helpers import wait_http

pytestmark = pytest.mark.asyncio(loop_scope="module")

APP = str((Path(__file__).parent / "apps" / "pool_app.py").resolve())
DEADLINE_S = 10.0
MAX_HEAD = 64 * 1024


def pool_body(name: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "command": [sys.executable, APP, "--port", "{port}"],
        "listen": "127.0.0.1:0",
    }
    body.update(fields)
    return body


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def has_ready_instance(doc: dict[str, Any]) -> bool:
    return any(i["state"] == "ready" for i in doc["instances"])


@dataclass
class Site:
    """An agent with one pool ``web`` (one instance kept running)."""

    agent: Agent
    api: httpx.AsyncClient
    pool: dict[str, Any]
    data_dir: Path

    @property
    def pool_url(self) -> str:
        url: str = self.pool["url"]
        return url

    @property
    def pool_port(self) -> int:
        return port_of(self.pool_url)

    @property
    def agent_port(self) -> int:
        return port_of(self.agent.url)

    @property
    def pool_host(self) -> str:
        return f"web.localhost:{self.agent_port}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    data_dir = tmp_path_factory.mktemp("router-proxy") / "data"
    async with (
        Agent(fast_config(data_dir)) as agent,
        httpx.AsyncClient(base_url=agent.url, timeout=30) as api,
    ):
        response = await api.post("/pools", json=pool_body("web", min_instances=1))
        assert response.status_code == 201, response.text
        doc = await wait_http(api, response.json()["details"], has_ready_instance)
        yield Site(agent, api, doc, data_dir)


# --- raw HTTP ---------------------------------------------------------------------------------------


@dataclass
class Raw:
    """A response read off a socket, byte-exact."""

    status: int
    head: bytes
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        assert values is None or len(values) == 1, values
        return values[0] if values else None


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async with asyncio.timeout(DEADLINE_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4 * MAX_HEAD)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(DEADLINE_S):
                await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader, *, method: bytes = b"GET") -> Raw:
    """One response: its head, then its body as framed (length, chunked or until EOF)."""
    async with asyncio.timeout(DEADLINE_S):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, *_ = status_line.split(" ", 2)
        assert version in ("HTTP/1.1", "HTTP/1.0"), status_line
        response = Raw(int(status), head)
        for line in lines:
            name, _, value = line.partition(":")
            response.headers.setdefault(name.lower(), []).append(value.strip())
        if method == b"HEAD" or response.status < 200 or response.status in (204, 304):
            return response
        if response.header("transfer-encoding") == "chunked":
            assert response.header("content-length") is None
            response.body = await read_chunked(reader)
        elif (length := response.header("content-length")) is not None:
            response.body = await reader.readexactly(int(length))
        else:
            response.body = await reader.read()
    return response


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line[:-2].split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return bytes(body)
        body += await reader.readexactly(size)
        assert await reader.readexactly(2) == b"\r\n"


async def rest_until_eof(reader: asyncio.StreamReader) -> bytes:
    """Whatever arrives before the peer closes (fails if it does not close in time)."""
    data = bytearray()
    async with asyncio.timeout(DEADLINE_S):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                data += chunk
    return bytes(data)


async def exchange(port: int, data: bytes, *, method: bytes = b"GET") -> tuple[Raw, bytes]:
    """Send ``data`` on a new connection; the first response and what follows until EOF."""
    async with connect(port) as (reader, writer):
        writer.write(data)
        response = await read_response(reader, method=method)
        return response, await rest_until_eof(reader)


async def seen_by_instance(port: int) -> int:
    """The instance's request count (this request included), asked on a fresh connection."""
    response, _ = await exchange(port, b"GET /count HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
    assert response.status == 200
    return int(response.body)


def request(method: str, target: str, *headers: str, body: bytes = b"", host: str = "web") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --- request smuggling ------------------------------------------------------------------------------

SMUGGLED = b"GET /pid HTTP/1.1\r\nHost: web\r\n\r\n"

SMUGGLING = [
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n%s" % (5 + len(SMUGGLED), SMUGGLED),
        id="CL+TE",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
        id="TE+CL",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n%s"
        % (len(SMUGGLED), SMUGGLED),
        id="two-different-CLs",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        id="two-equal-CLs",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n%s"
        % SMUGGLED,
        id="TE-chunked-identity",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n%s" % SMUGGLED,
        id="two-TEs",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length : %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED),
        id="space-before-colon",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n%s" % SMUGGLED,
        id="obs-fold-TE",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\nContent-Length: 3\r\n\r\n"
        b"0\r\n\r\n%s" % SMUGGLED,
        id="bare-LF-in-head",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\nAAAAA\r\n0\r\n\r\n%s" % (5, SMUGGLED),
        id="bare-LF-in-chunk-size-line",
    ),
    pytest.param(
        b"GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED),
        id="upgrade-with-a-body",
    ),
]


@pytest.mark.parametrize("attack", SMUGGLING)
async def test_smuggling_attempts_get_400_and_never_reach_the_instance(site: Site, attack: bytes) -> None:
    before = await seen_by_instance(site.pool_port)
    response, rest = await exchange(site.pool_port, attack)
    assert response.status == 400, response
    assert response.header("connection") == "close"
    assert rest == b""  # one answer, then the connection is closed: nothing smuggled was answered
    after = await seen_by_instance(site.pool_port)
    assert after == before + 1, "the instance saw a request the proxy refused"


WIRE_REFUSALS = [
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, id="HTTP/2-preface"),
    pytest.param(b"GET /pid HTTP/2.0\r\nHost: web\r\n\r\n", 505, id="HTTP/2.0"),
    pytest.param(b"GET http://web/pid HTTP/1.1\r\nHost: web\r\n\r\n", 400, id="absolute-form"),
    pytest.param(b"GET /pid HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, id="no-Host"),
    pytest.param(b"GET /pid HTTP/1.1\r\nHost: web\r\nHost: other\r\n\r\n", 400, id="two-Hosts"),
    pytest.param(b"GET /pid HTTP/1.1\r\nHost: web\r\nX-A: 1\r\n X-B: 2\r\n\r\n", 400, id="obs-fold"),
]


@pytest.mark.parametrize(("data", "status"), WIRE_REFUSALS)
async def test_malformed_heads_are_refused_and_never_reach_the_instance(
    site: Site, data: bytes, status: int
) -> None:
    before = await seen_by_instance(site.pool_port)
    response, rest = await exchange(site.pool_port, data)
    assert response.status == status, response
    assert rest == b""
    assert await seen_by_instance(site.pool_port) == before + 1


# --- headers ------------------------------------------------------------------------------------------

HOP_BY_HOP = (
    "Connection: keep-alive, X-Drop-Me",
    "Keep-Alive: timeout=5",
    "TE: trailers",
    "Trailer: X-Checksum",
    "Upgrade: h2c",
    "Proxy-Authorization: Basic Zm9vOmJhcg==",
    "Proxy-Connection: keep-alive",
    "X-Drop-Me: secret",
    "X-Keep-Me: kept",
    "X-Forwarded-For: 203.0.113.7",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Host: evil.example",
)


@pytest.mark.parametrize("entrance", ["pool-listen", "agent-port"])
async def test_hop_by_hop_headers_are_removed_and_x_forwarded_set(site: Site, entrance: str) -> None:
    if entrance == "pool-listen":
        port, host = site.pool_port, "app.example:8080"
    else:
        port, host = site.agent_port, site.pool_host
    async with connect(port) as (reader, writer):
        writer.write(request("GET", "/headers", *HOP_BY_HOP, host=host))
        response = await read_response(reader)
    assert response.status == 200
    seen: dict[str, str] = json.loads(response.body)
    for name in (
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "x-drop-me",
        "transfer-encoding",
    ):
        assert name not in seen, (name, seen)
    assert seen["x-keep-me"] == "kept"
    assert seen["host"] == host
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == host


async def test_x_forwarded_for_is_the_client_when_it_sent_none(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.pool_url, timeout=DEADLINE_S) as through:
        seen = (await through.get("/headers")).json()
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == seen["host"]


# --- bodies -------------------------------------------------------------------------------------------


async def test_a_streamed_chunked_upload_is_echoed_intact(site: Site) -> None:
    rng = random.Random(4)
    body = rng.randbytes(1_000_000)  # the app reads at most 1 MiB (aiohttp's default)
    cuts = sorted(rng.sample(range(1, len(body)), 40))

    async def pieces() -> AsyncIterator[bytes]:
        for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
            yield body[start:end]

    async with httpx.AsyncClient(base_url=site.pool_url, timeout=DEADLINE_S) as through:
        response = await through.post("/echo", content=pieces())
    assert response.status_code == 200
    assert response.content == body


async def test_chunk_extensions_and_trailers_are_accepted_and_the_body_relayed(site: Site) -> None:
    body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE ; x\r\n in\r\n\r\nchunks.\r\n0\r\nX-Sum: 1\r\n\r\n"
    async with connect(site.pool_port) as (reader, writer):
        writer.write(request("POST", "/echo", "Transfer-Encoding: chunked", body=body))
        response = await read_response(reader)
    assert response.status == 200
    assert response.body == b"Wikipedia in\r\n\r\nchunks."


async def test_large_bodies_both_ways(site: Site) -> None:
    upload = random.Random(5).randbytes(1_000_000)
    async with httpx.AsyncClient(base_url=site.pool_url, timeout=DEADLINE_S) as through:
        echoed = await through.post("/echo", content=upload)
        assert echoed.status_code == 200
        assert echoed.content == upload
        big = await through.get("/big", params={"bytes": 5_000_000})
    assert big.status_code == 200
    assert big.headers["content-length"] == "5000000"
    assert big.content == b"x" * 5_000_000


async def test_server_sent_events_arrive_as_events(site: Site) -> None:
    async with (
        httpx.AsyncClient(base_url=site.pool_url, timeout=DEADLINE_S) as through,
        through.stream("GET", "/sse", params={"n": 5}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["transfer-encoding"] == "chunked"
        text = "".join([piece async for piece in response.aiter_text()])
    events = [e for e in text.split("\n\n") if e]
    assert events == [f"data: event {i}" for i in range(5)]


async def test_head_is_answered_without_a_body(site: Site) -> None:
    async with connect(site.pool_port) as (reader, writer):
        writer.write(request("HEAD", "/pid"))
        head = await read_response(reader, method=b"HEAD")
        writer.write(request("GET", "/pid"))  # a body after the HEAD would be read as this response
        get = await read_response(reader)
    assert head.status == 200
    assert head.body == b""
    assert get.status == 200
    assert head.header("content-length") == str(len(get.body))


async def test_keep_alive_two_requests_on_one_connection(site: Site) -> None:
    async with connect(site.pool_port) as (reader, writer):
        writer.write(request("GET", "/pid"))
        first = await read_response(reader)
        writer.write(request("POST", "/echo", "Content-Length: 5", body=b"again"))
        second = await read_response(reader)
    assert first.status == 200
    assert first.header("connection") is None
    assert int(first.body) == site.pool["instances"][0]["pid"]
    assert (second.status, second.body) == (200, b"again")


async def test_pipelined_requests_are_answered_in_order(site: Site) -> None:
    pipeline = (
        request("POST", "/echo", "Content-Length: 5", body=b"first")
        + request("POST", "/echo", "Transfer-Encoding: chunked", body=b"6\r\nsecond\r\n0\r\n\r\n")
        + request("HEAD", "/pid")
        + request("GET", "/sse?n=2")
        + request("POST", "/echo", "Content-Length: 5", "Connection: close", body=b"fifth")
    )
    async with connect(site.pool_port) as (reader, writer):
        writer.write(pipeline)
        responses = [await read_response(reader) for _ in range(2)]
        responses.append(await read_response(reader, method=b"HEAD"))
        responses += [await read_response(reader) for _ in range(2)]
        rest = await rest_until_eof(reader)
    assert [r.status for r in responses] == [200] * 5
    assert [r.body for r in responses] == [
        b"first",
        b"second",
        b"",
        b"data: event 0\n\ndata: event 1\n\n",
        b"fifth",
    ]
    assert rest == b""


async def test_expect_100_continue_is_relayed(site: Site) -> None:
    async with connect(site.pool_port) as (reader, writer):
        writer.write(request("POST", "/echo", "Content-Length: 7", "Expect: 100-continue"))
        interim = await read_response(reader)
        assert interim.status == 100
        writer.write(b"go on!!")
        final = await read_response(reader)
    assert (final.status, final.body) == (200, b"go on!!")


async def test_a_request_then_half_close_still_gets_its_answer(site: Site) -> None:
    async with connect(site.pool_port) as (reader, writer):
        writer.write(request("POST", "/echo", "Content-Length: 4", body=b"bye!"))
        writer.write_eof()
        response = await read_response(reader)
        rest = await rest_until_eof(reader)
    assert (response.status, response.body, rest) == (200, b"bye!", b"")


@pytest.mark.parametrize("entrance", ["pool-listen", "agent-port"])
async def test_a_request_trickled_in_small_writes_is_served(site: Site, entrance: str) -> None:
    port, host = (site.pool_port, "web") if entrance == "pool-listen" else (site.agent_port, site.pool_host)
    data = request("POST", "/echo", "Transfer-Encoding: chunked", host=host, body=b"3\r\nabc\r\n0\r\n\r\n")
    async with connect(port) as (reader, writer):
        for start in range(0, len(data), 7):
            writer.write(data[start : start + 7])
            await writer.drain()
        response = await read_response(reader)
    assert (response.status, response.body) == (200, b"abc")


async def test_http10_without_host_is_served(site: Site) -> None:
    response, rest = await exchange(site.pool_port, b"GET /pid HTTP/1.0\r\n\r\n")
    assert response.status == 200, response
    assert int(response.body) == site.pool["instances"][0]["pid"]
    assert rest == b""


async def test_http10_gets_a_streamed_body_delimited_by_close(site: Site) -> None:
    response, rest = await exchange(site.pool_port, b"GET /sse?n=3 HTTP/1.0\r\nHost: web\r\n\r\n")
    assert response.status == 200
    assert response.header("transfer-encoding") is None
    assert response.body + rest == b"data: event 0\n\ndata: event 1\n\ndata: event 2\n\n"


# --- WebSockets and upgrades -------------------------------------------------------------------------


async def websocket_echo(url: str, headers: dict[str, str] | None = None) -> None:
    timeout = aiohttp.ClientTimeout(total=DEADLINE_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(
            url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_receive=DEADLINE_S)
        ) as ws,
    ):
        await ws.send_str("hello")
        assert await ws.receive_str() == "hello"
        payload = os.urandom(200_000)
        await ws.send_bytes(payload)
        assert await ws.receive_bytes() == payload
        for i in range(20):
            await ws.send_str(f"message {i}")
        assert [await ws.receive_str() for _ in range(20)] == [f"message {i}" for i in range(20)]
        await ws.close()


async def test_websocket_echo_on_the_pools_listen_address(site: Site) -> None:
    await websocket_echo(f"{site.pool_url}/ws")


async def test_websocket_echo_on_the_agents_port_by_host(site: Site) -> None:
    await websocket_echo(f"{site.agent.url}/ws", headers={"Host": site.pool_host})


@pytest.mark.parametrize("entrance", ["pool-listen", "agent-port"])
async def test_a_failed_upgrade_is_answered_then_the_connection_closed(site: Site, entrance: str) -> None:
    port, host = (site.pool_port, "web") if entrance == "pool-listen" else (site.agent_port, site.pool_host)
    attempt = request(
        "GET",
        "/pid",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        host=host,
    )
    response, rest = await exchange(port, attempt + request("GET", "/pid", host=host))
    assert response.status == 200
    assert int(response.body) == site.pool["instances"][0]["pid"]
    assert response.header("connection") == "close"
    assert rest == b""  # the request behind it is not answered on this connection


# --- limits -------------------------------------------------------------------------------------------


def big_head(*, complete: bool) -> bytes:
    lines = [b"GET /pid HTTP/1.1", b"Host: web", b"Connection: close"]
    lines += [b"X-Filler-%d: %s" % (i, b"f" * 1000) for i in range(MAX_HEAD // 1000 + 2)]
    data = b"\r\n".join(lines) + b"\r\n"
    assert MAX_HEAD < len(data) < MAX_HEAD + 4000
    return data + b"\r\n" if complete else data


@pytest.mark.parametrize("complete", [False, True], ids=["incomplete", "complete"])
async def test_a_head_over_64_kib_gets_431(site: Site, complete: bool) -> None:
    before = await seen_by_instance(site.pool_port)
    response, rest = await exchange(site.pool_port, big_head(complete=complete))
    assert response.status == 431, response
    assert rest == b""
    assert await seen_by_instance(site.pool_port) == before + 1


LIMITS = {"max_body_bytes": 1000, "header_timeout_s": 0.5, "read_timeout_s": 1.0, "keepalive_timeout_s": 0.5}


@pytest_asyncio.fixture(loop_scope="module")
async def limited(make_agent: AgentFactory, tmp_path: Path) -> AsyncIterator[Site]:
    """An agent whose router has small limits, and a pool ``web`` on it."""
    async with (
        make_agent(router=LIMITS) as agent,
        httpx.AsyncClient(base_url=agent.url, timeout=30) as api,
    ):
        assert agent.config.router.max_body_bytes == 1000
        assert agent.config.router.header_timeout_s == 0.5
        response = await api.post("/pools", json=pool_body("web", min_instances=1))
        assert response.status_code == 201, response.text
        doc = await wait_http(api, response.json()["details"], has_ready_instance)
        yield Site(agent, api, doc, tmp_path / "data")


async def test_a_content_length_over_the_limit_gets_413(limited: Site) -> None:
    before = await seen_by_instance(limited.pool_port)
    response, rest = await exchange(limited.pool_port, request("POST", "/echo", "Content-Length: 1001"))
    assert response.status == 413
    assert rest == b""
    assert await seen_by_instance(limited.pool_port) == before + 1
    body = b"b" * 1000
    at_limit, _ = await exchange(
        limited.pool_port, request("POST", "/echo", "Content-Length: 1000", "Connection: close", body=body)
    )
    assert (at_limit.status, at_limit.body) == (200, body)


async def test_a_chunked_body_over_the_limit_gets_413(limited: Site) -> None:
    body = b"".join(b"64\r\n" + b"c" * 100 + b"\r\n" for _ in range(11)) + b"0\r\n\r\n"
    response, rest = await exchange(
        limited.pool_port, request("POST", "/echo", "Transfer-Encoding: chunked", body=body)
    )
    assert response.status == 413
    assert rest == b""


async def test_an_incomplete_head_gets_408_after_the_header_timeout(limited: Site) -> None:
    async with connect(limited.pool_port) as (reader, writer):
        started = time.monotonic()
        writer.write(b"GET /pid HTTP/1.1\r\nHost: web\r\n")
        response = await read_response(reader)
        waited = time.monotonic() - started
        rest = await rest_until_eof(reader)
    assert response.status == 408
    assert rest == b""
    assert waited >= 0.4  # the header timeout, not an immediate refusal


async def test_a_stalled_body_gets_408_after_the_read_timeout(limited: Site) -> None:
    async with connect(limited.pool_port) as (reader, writer):
        writer.write(request("POST", "/echo", "Content-Length: 10", body=b"abc"))
        response = await read_response(reader)
        rest = await rest_until_eof(reader)
    assert response.status == 408
    assert rest == b""


async def test_a_silent_instance_gets_504_after_the_read_timeout(limited: Site) -> None:
    response, rest = await exchange(limited.pool_port, request("GET", "/slow?s=2"))
    assert response.status == 504
    assert rest == b""


async def test_an_idle_keep_alive_connection_is_closed(limited: Site) -> None:
    async with connect(limited.pool_port) as (reader, writer):
        writer.write(request("GET", "/pid"))
        response = await read_response(reader)
        assert response.status == 200
        started = time.monotonic()
        rest = await rest_until_eof(reader)
        assert time.monotonic() - started >= 0.4
    assert rest == b""


# --- the agent's own port -----------------------------------------------------------------------------


async def test_the_agents_port_still_serves_its_api(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.agent.url, timeout=DEADLINE_S) as api:
        index = await api.get("/")
        assert index.status_code == 200
        assert index.json()["pools"] == f"{site.agent.url}/pools"
        doc = (await api.get("/pools/web")).json()
    assert doc["host"] == site.pool_host


async def test_a_pools_host_on_the_agents_port_reaches_the_pool(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.agent.url, timeout=DEADLINE_S) as api:
        response = await api.get("/pid", headers={"Host": site.pool_host})
        upper = await api.get("/pid", headers={"Host": "WEB.example"})
    assert response.status_code == 200
    assert int(response.text) == site.pool["instances"][0]["pid"]
    assert upper.status_code == 200


async def test_a_host_naming_no_pool_on_a_pool_routed_connection_gets_421(site: Site) -> None:
    async with connect(site.agent_port) as (reader, writer):
        writer.write(request("GET", "/pid", host=site.pool_host))
        first = await read_response(reader)
        writer.write(request("GET", "/", host=f"127.0.0.1:{site.agent_port}"))
        second = await read_response(reader)
        rest = await rest_until_eof(reader)
    assert first.status == 200
    assert second.status == 421
    assert rest == b""


async def test_a_pools_host_on_an_api_connection_is_not_answered_by_the_api(site: Site) -> None:
    """A keep-alive connection that began with an API request, then names the pool."""
    async with connect(site.agent_port) as (reader, writer):
        writer.write(request("GET", "/pools", host=f"127.0.0.1:{site.agent_port}"))
        first = await read_response(reader)
        writer.write(request("GET", "/pid", host=site.pool_host))
        second = await read_response(reader)
    assert first.status == 200
    # Either the pool answers, or the request is refused as misdirected (the client may
    # retry on a new connection); the API's "foreign Host" refusal is neither.
    assert second.status in (200, 421), second


# --- creating pools: bad input ----------------------------------------------------------------------

BAD_POOLS = [
    pytest.param({"bogus": 1}, 422, "bogus", id="unknown-field"),
    pytest.param({"name": "Web2"}, 422, "name", id="uppercase-name"),
    pytest.param({"name": "2web"}, 422, "name", id="name-starts-with-digit"),
    pytest.param({"name": "a.b"}, 422, "name", id="dotted-name"),
    pytest.param({"name": ""}, 422, "name", id="empty-name"),
    pytest.param({"min_instances": 3, "max_instances": 2}, 422, "min_instances", id="min-over-max"),
    pytest.param({"max_instances": 0}, 422, "max_instances", id="max-zero"),
    pytest.param(
        {"source_url": "file:///tmp/app", "process_type": "web"}, 422, "command", id="command-and-source"
    ),
    pytest.param({"command": None}, 422, "source_url", id="no-way-to-run"),
    pytest.param({"listen": "nonsense"}, 422, "listen", id="listen-nonsense"),
    pytest.param({"listen": "127.0.0.1:70000"}, 422, "listen", id="listen-port-out-of-range"),
    pytest.param({"listen": "192.0.2.1:0"}, 422, "listen", id="listen-off-loopback-without-auth"),
    pytest.param({"ready": {"path": "ready"}}, 422, "ready.path", id="ready-path-relative"),
    pytest.param({"name": "web"}, 409, "name", id="duplicate-name"),
    pytest.param({"listen": "POOL"}, 409, "listen", id="listen-address-in-use"),
]


@pytest.mark.parametrize(("fields", "status", "field_name"), BAD_POOLS)
async def test_bad_pool_creation_is_refused_naming_the_field(
    site: Site, fields: dict[str, Any], status: int, field_name: str
) -> None:
    fields = dict(fields)
    if fields.get("listen") == "POOL":
        fields["listen"] = f"127.0.0.1:{site.pool_port}"
    response = await site.api.post("/pools", json=pool_body(fields.pop("name", "other"), **fields))
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field_name, error
    assert error["message"]
    # Nothing half-created; the agent and its pool carry on.
    listing = (await site.api.get("/pools")).json()
    assert [p["name"] for p in listing["pools"]] == ["web"]
    assert sorted(p.name for p in (site.data_dir / "pools").iterdir()) == ["web.json"]
    assert (await site.api.get("/")).status_code == 200
    async with httpx.AsyncClient(base_url=site.pool_url, timeout=DEADLINE_S) as through:
        assert (await through.get("/pid")).status_code == 200


async def test_a_body_that_is_not_json_is_refused(site: Site) -> None:
    response = await site.api.post("/pools", content=b"{name: web")
    assert response.status_code == 400
    assert response.json()["field"] == "body"
