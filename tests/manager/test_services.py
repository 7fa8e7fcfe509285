"""The service registry on a real manager: register over the link, find, watch, expire."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from herder.auth import init_keys
from herder.manager.server import Manager
from herder.rpc import Service, dial
from herder.rpc.client import connect
from herder.rpc.errors import RemoteError, RpcError
from tests.helpers import HERDER
from tests.manager.conftest import ManagerFactory

MATH = "/alice/prod/math/1.2.0/eu/host-1/math-1"


# The services here listen on (or name) loopback. The proxy refuses loopback targets by
# default, at registration too (#12 §1): this manager allows it explicitly, as an admin of
# a single host would.
LOOPBACK_ALLOWED: dict[str, Any] = {"proxy_allow_networks": ["127.0.0.0/8", "::1/128"]}


@pytest.fixture
async def manager(make_manager: ManagerFactory) -> AsyncIterator[Manager]:
    async with make_manager(**LOOPBACK_ALLOWED) as running:
        yield running


def rpc_url(manager: Manager) -> str:
    return manager.url.replace("http://", "ws://") + "/rpc"


async def next_event(ws: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return event


async def test_a_service_is_found_by_prefix_watched_and_gone_with_its_link(manager: Manager) -> None:
    watch_url = manager.url.replace("http://", "ws://") + "/services/watch?query=/alice/prod"
    async with websockets.connect(watch_url) as watcher, httpx.AsyncClient(base_url=manager.url) as client:
        peer_cm = connect(rpc_url(manager))
        peer = await peer_cm.__aenter__()
        try:
            doc = await peer.call("register_service", MATH, "http://127.0.0.1:9999/", {"zone": "a"}, 0)
            assert doc["key"] == MATH
            assert doc["expires_at"] is None  # kept by the link
            event = await next_event(watcher)
            assert (event["event"], event["service"]["key"]) == ("registered", MATH)
            for query in (
                "/alice",
                "/alice/prod/math",
                "/alice/prod/math/>=1.2,<2",
                "/alice/*/math/1.2.0/eu",
            ):
                found = (await client.get("/services", params={"query": query})).json()["services"]
                assert [s["key"] for s in found] == [MATH], query
            assert (await client.get("/services", params={"query": "/alice/prod/math/>=2"})).json()[
                "services"
            ] == []
            assert [s["key"] for s in await peer.call("find_services", "/alice/prod")] == [MATH]
        finally:
            await peer_cm.__aexit__(None, None, None)
        event = await next_event(watcher)
        assert (event["event"], event["service"]["key"]) == ("deregistered", MATH)
        assert (await client.get("/services", params={"query": "/alice"})).json()["services"] == []


async def test_a_ttl_runs_out_unless_renewed(manager: Manager) -> None:
    async with connect(rpc_url(manager)) as peer, httpx.AsyncClient(base_url=manager.url) as client:
        kept = "/alice/prod/math/1.2.0/eu/host-1/kept"
        lost = "/alice/prod/math/1.2.0/eu/host-1/lost"
        await peer.call("register_service", kept, "http://127.0.0.1:1/", {}, 0.5)
        await peer.call("register_service", lost, "http://127.0.0.1:2/", {}, 0.5)
        deadline = time.monotonic() + 10
        while True:
            await peer.call("renew_service", "kept", 0.5)
            found = [
                s["key"]
                for s in (await client.get("/services", params={"query": "/alice"})).json()["services"]
            ]
            if found == [kept]:
                break
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.1)
        with pytest.raises(RemoteError, match="register again"):
            await peer.call("renew_service", "lost", 0.5)


async def test_queries_that_skip_a_part_are_refused_saying_why(manager: Manager) -> None:
    async with httpx.AsyncClient(base_url=manager.url) as client:
        answer = await client.get("/services", params={"query": "/alice//math"})
        assert answer.status_code == 400
        assert answer.json()["field"] == "query.environment"
        assert "general to specific" in answer.json()["message"]
        assert (await client.get("/services")).status_code == 422


async def test_with_keys_users_register_only_under_their_own_name(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with make_manager(**LOOPBACK_ALLOWED) as manager:
        assert manager.runtime is not None
        assert manager.authority is not None
        async with manager.runtime.transaction() as db:
            bob = await manager.authority.issue_key(db, "bob", "user")
        token, _ = manager.authority.token_for(bob.key)
        async with connect(rpc_url(manager), token=token) as peer:
            with pytest.raises(RemoteError, match="only under /bob"):
                await peer.call("register_service", MATH, "http://127.0.0.1:1/", {}, 0)
            mine = "/bob/dev/math/0.1/eu/host-1/bob-1"
            assert (await peer.call("register_service", mine, "http://127.0.0.1:1/", {}, 0))["owner"] == "bob"


@contextlib.asynccontextmanager
async def math_service(version: str) -> AsyncIterator[Service]:
    """A real ``math`` service (``square``) serving on a loopback port until the block ends."""
    svc = Service("math", version)

    @svc.method(auth=False)
    async def square(x: float) -> float:
        """The square of x."""
        return x * x

    started = asyncio.Event()
    serving = asyncio.create_task(svc.serve(port=0, started=started))
    try:
        await asyncio.wait_for(started.wait(), 10)
        yield svc
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


async def test_the_math_service_registers_in_one_line_and_is_called_by_name(
    manager: Manager,
) -> None:
    async with math_service("1.2.0") as svc:
        registration = await svc.register(MATH, manager=manager.url)
        async with dial("/alice/prod/math/>=1,<2", manager=manager.url) as math:
            assert await math.call("square", 4) == 16
        cli = await asyncio.to_thread(
            subprocess.run,
            [HERDER, "call", "/alice/prod/math", "square", "4", "--manager", manager.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == 16
        listed = await asyncio.to_thread(
            subprocess.run,
            [HERDER, "services", "ls", "/alice", "--manager", manager.url, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert [s["key"] for s in json.loads(listed.stdout)["services"]] == [MATH]
        table = await asyncio.to_thread(
            subprocess.run,
            [HERDER, "services", "ls", "/alice", "--manager", manager.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert table.returncode == 0, table.stderr
        assert table.stdout.splitlines()[1].startswith(MATH)
        await registration.close()
        async with httpx.AsyncClient(base_url=manager.url) as client:
            deadline = time.monotonic() + 10
            while (await client.get("/services", params={"query": "/alice"})).json()["services"]:
                assert time.monotonic() < deadline, "the service never dropped out"
                await asyncio.sleep(0.05)
        with pytest.raises(LookupError, match="no live instance"):
            async with dial("/alice/prod/math", manager=manager.url):
                pass


@contextlib.asynccontextmanager
async def echo_server() -> Any:
    """A real HTTP and WebSocket server on loopback that says what it received."""
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "path": request.path,
                "query": request.query_string,
                "body": (await request.read()).decode(),
                "authorization": request.headers.get("Authorization"),
                "forwarded_for": request.headers.get("X-Forwarded-For"),
            },
            status=201,
        )

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(f"echo: {message.data}")
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_echo)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_proxy_gives_a_service_a_url_on_the_manager_for_http_and_websocket(
    manager: Manager,
) -> None:
    async with echo_server() as base, connect(rpc_url(manager)) as peer:
        key = "/alice/prod/web/1.0.0/eu/host-1/web-1"
        await peer.call("register_service", key, base + "/", {}, 0)
        async with httpx.AsyncClient(base_url=manager.url) as client:
            answer = await client.post(
                "/proxy/web-1/api/items?x=1", content=b"hello", headers={"Authorization": "Bearer secret"}
            )
            assert answer.status_code == 201
            seen = answer.json()
            assert (seen["path"], seen["query"], seen["body"]) == ("/api/items", "x=1", "hello")
            assert seen["authorization"] is None  # the manager's credentials stay at the manager
            assert seen["forwarded_for"] == "127.0.0.1"
            missing = await client.get("/proxy/nobody/x")
            assert (missing.status_code, missing.json()["field"]) == (404, "id")
        ws_url = manager.url.replace("http://", "ws://") + "/proxy/web-1/ws"
        async with websockets.connect(ws_url) as ws:
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 10) == "echo: ping"


async def test_answers_are_bounded_by_a_limit(manager: Manager) -> None:
    async with connect(rpc_url(manager)) as peer, httpx.AsyncClient(base_url=manager.url) as client:
        for n in range(3):
            await peer.call(
                "register_service", f"/alice/prod/math/1.0.0/eu/h/m{n}", "http://127.0.0.1:1/", {}, 0
            )
        assert len(await peer.call("find_services", "/alice", 2)) == 2
        found = await client.get("/services", params={"query": "/*", "limit": "1"})
        assert len(found.json()["services"]) == 1
        refused = await client.get("/services", params={"query": "/*", "limit": "0"})
        assert (refused.status_code, refused.json()["field"]) == (422, "limit")


RENEWING_SERVICE = """
import asyncio, sys
from herder.rpc import connect

async def main():
    async with connect(sys.argv[1]) as peer:
        await peer.call("register_service", sys.argv[2], "http://127.0.0.1:1/", {}, 1.0)
        print("registered", flush=True)
        for _ in range(100_000):
            await peer.call("renew_service", sys.argv[3], 1.0)
            await asyncio.sleep(0.2)

asyncio.run(main())
"""


async def test_a_killed_service_drops_out_after_its_ttl(manager: Manager) -> None:
    key = "/alice/prod/math/1.2.0/eu/host-2/renewer"
    proc = subprocess.Popen(
        [sys.executable, "-c", RENEWING_SERVICE, rpc_url(manager), key, "renewer"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30) == "registered\n"
        async with httpx.AsyncClient(base_url=manager.url) as client:

            async def listed() -> bool:
                answer = await client.get("/services", params={"query": "/alice/prod/math"})
                return [s["key"] for s in answer.json()["services"]] == [key]

            started = time.monotonic()
            while time.monotonic() - started < 2.5:  # alive past two TTLs: renewals keep it
                assert await listed()
                await asyncio.sleep(0.1)
            proc.kill()
            proc.wait(timeout=10)
            killed = time.monotonic()
            while await listed():
                assert time.monotonic() - killed < 10, "a killed service never dropped out"
                await asyncio.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_a_service_with_a_key_registers_and_is_dialed_with_one(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with make_manager(**LOOPBACK_ALLOWED) as manager, math_service("0.1.0") as svc:
        assert manager.runtime is not None
        assert manager.authority is not None
        async with manager.runtime.transaction() as db:
            bob = await manager.authority.issue_key(db, "bob", "user")
        registration = await svc.register(
            "/bob/dev/math/0.1.0/eu/h/bob-math", manager=manager.url, auth_key=bob.key
        )
        async with dial("/bob/dev/math", manager=manager.url, key=bob.key) as math:
            assert await math.call("square", 3) == 9
        with pytest.raises(RpcError):  # without credentials the manager's link refuses
            async with dial("/bob/dev/math", manager=manager.url):
                pass
        await registration.close()
