"""The front door: Host and Origin checks, auth, body and header limits and deadlines."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import httpx
import pytest

from herder.agent import Agent
from tests.conftest import AgentFactory

CREATE = {"app": "g", "node": "n.0", "command": ["sleep", "100"]}


async def raw_exchange(agent: Agent, data: bytes, timeout_s: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; return all the agent answered until it closed."""
    host, port = agent.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            return await reader.read()
    finally:
        writer.close()


async def test_foreign_host_is_refused(agent: Agent, client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers={"Host": "evil.example"})
    assert response.status_code == 403
    assert response.json()["field"] == "Host"
    assert (await client.get("/", headers={"Host": "localhost:1234"})).status_code == 200


async def test_foreign_origin_cannot_change_state(agent: Agent, client: httpx.AsyncClient) -> None:
    evil = {"Origin": "http://evil.example"}
    response = await client.post("/create-process", json=CREATE, headers=evil)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden_origin"
    assert (await client.get("/list-processes")).json() == {"processes": []}
    # Reading is fine (CORS keeps the answer from the page anyway).
    assert (await client.get("/", headers=evil)).status_code == 200
    own = {"Origin": agent.url}
    assert (await client.post("/create-process", json=CREATE, headers=own)).status_code == 201
    assert (
        await client.post("/delete-process/g.n.0", content="{}", headers={"Origin": "null"})
    ).status_code == 403


async def test_foreign_origin_cannot_attach(agent: Agent, client: httpx.AsyncClient) -> None:
    created = (await client.post("/create-process", json=CREATE)).json()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(created["attach"], origin="http://evil.example")
        assert info.value.status == 403


async def test_body_over_the_limit(make_agent: AgentFactory) -> None:
    async with (
        make_agent(limits={"max_body_bytes": 1000}) as agent,
        httpx.AsyncClient(base_url=agent.url) as client,
    ):
        big = {**CREATE, "env": {"X": "y" * 2000}}
        response = await client.post("/create-process", json=big)
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"

        # No Content-Length: the limit applies while the chunks are read.
        chunk = b"1f4\r\n" + b" " * 500 + b"\r\n"
        request = (
            b"POST /create-process HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk * 10
            + b"0\r\n\r\n"
        )
        answer = await raw_exchange(agent, request)
        assert answer.startswith(b"HTTP/1.1 413")
        assert (await client.get("/")).status_code == 200


async def test_slow_headers_are_cut_off(make_agent: AgentFactory) -> None:
    async with make_agent(limits={"header_timeout_s": 0.3}) as agent:
        started = time.monotonic()
        answer = await raw_exchange(agent, b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        assert answer == b""
        assert time.monotonic() - started < 5


async def test_silent_connection_is_cut_off(make_agent: AgentFactory) -> None:
    async with make_agent(limits={"header_timeout_s": 0.3}) as agent:
        assert await raw_exchange(agent, b"") == b""


async def test_slow_body_gets_408(make_agent: AgentFactory) -> None:
    async with make_agent(limits={"body_timeout_s": 0.3}) as agent:
        request = (
            b"POST /create-process HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n" + b'{"app": '
        )
        answer = await raw_exchange(agent, request)
        assert answer.startswith(b"HTTP/1.1 408")


async def test_huge_headers_are_refused(agent: Agent) -> None:
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"X-Junk: " + b"a" * 100_000 + b"\r\n\r\n"
    answer = await raw_exchange(agent, request)
    assert answer.startswith(b"HTTP/1.1 431")


async def test_auth_token(make_agent: AgentFactory) -> None:
    async with make_agent(auth_token="s3cret") as agent, httpx.AsyncClient(base_url=agent.url) as client:
        response = await client.get("/")
        assert response.status_code == 401
        assert response.json()["field"] == "Authorization"
        bad = {"Authorization": "Bearer nope"}
        assert (await client.get("/", headers=bad)).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/", headers=good)).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        async with aiohttp.ClientSession() as session:
            ws_url = agent.url.replace("http", "ws") + "/attach-console/x.y"
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(ws_url)
            assert info.value.status == 401


async def test_a_browser_offers_its_token_as_a_websocket_subprotocol(make_agent: AgentFactory) -> None:
    """A browser cannot set Authorization on an upgrade: it offers ``herder`` and
    ``herder.bearer.<token>``, and the answer names ``herder`` (or the browser fails it)."""
    async with make_agent(auth_token="s3cret") as agent, httpx.AsyncClient(base_url=agent.url) as client:
        good = {"Authorization": "Bearer s3cret"}
        created = (await client.post("/create-process", json=CREATE, headers=good)).json()
        async with aiohttp.ClientSession() as session:
            for wrong in (["herder", "herder.bearer.nope"], ["herder"], ["herder.bearer."]):
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await session.ws_connect(created["attach"], protocols=wrong, origin=agent.url)
                assert info.value.status == 401, wrong
            async with session.ws_connect(
                created["attach"], protocols=["herder", "herder.bearer.s3cret"], origin=agent.url
            ) as ws:
                assert ws.protocol == "herder"
    # Auth off: a browser's offer still gets its subprotocol.
    async with (
        make_agent() as agent,
        aiohttp.ClientSession() as session,
        session.ws_connect(
            agent.url.replace("http", "ws") + "/rpc", protocols=["herder"], origin=agent.url
        ) as ws,
    ):
        assert ws.protocol == "herder"


async def test_allowed_hosts_extend_the_loopback_names(make_agent: AgentFactory) -> None:
    async with (
        make_agent(allowed_hosts=["agent.internal"]) as agent,
        httpx.AsyncClient(base_url=agent.url) as client,
    ):
        assert (await client.get("/", headers={"Host": "agent.internal:8010"})).status_code == 200
        index = (await client.get("/", headers={"Host": "agent.internal:8010"})).json()
        assert index["list"] == "http://agent.internal:8010/list-processes"
        assert (await client.get("/", headers={"Host": "other.internal"})).status_code == 403


async def test_connection_cap_answers_503(make_agent: AgentFactory) -> None:
    """Past max_connections the agent answers 503 at once instead of queueing clients."""
    # uvicorn counts the arriving connection too: a cap of 3 serves 2 at a time.
    async with make_agent(limits={"max_connections": 3}) as agent:
        host, port = agent.url.removeprefix("http://").rsplit(":", 1)
        idle = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
        try:
            # Let the server accept both before the third arrives.
            for reader, writer in idle:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                await writer.drain()
                assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
            answer = await raw_exchange(
                agent, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            assert answer.startswith(b"HTTP/1.1 503")
        finally:
            for _, writer in idle:
                writer.close()
