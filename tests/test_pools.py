"""Pools behind the agent (issue 4): instances started on demand, replaced, scaled, drained.

Every test runs a real agent and real instances of ``tests/apps/pool_app.py`` on
loopback; requests go through the router's own listen address or the agent's port.
Waits poll documents with deadlines; nothing sleeps for time to pass.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from herder.agent import Agent
from tests.conftest import AgentFactory
from tests.helpers import pid_alive, wait_dead, wait_http

APP = str(Path(__file__).parent / "apps" / "pool_app.py")


def app_command(*extra: str) -> list[str]:
    return [sys.executable, APP, "--port", "{port}", *extra]


def pool_body(name: str = "web", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "command": app_command(), "listen": "127.0.0.1:0"}
    body.update(fields)
    return body


async def create_pool(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/pools", json=pool_body(**fields))
    assert response.status_code == 201, response.text
    doc: dict[str, Any] = response.json()
    return doc


def ready(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in doc["instances"] if i["state"] == "ready"]


@pytest.fixture
async def client(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=agent.url, timeout=30.0) as c:
        yield c


async def test_index_links_pools(client: httpx.AsyncClient) -> None:
    index = (await client.get("/")).json()
    assert index["pools"].endswith("/pools")
    assert (await client.get(index["pools"])).json() == {"pools": []}


async def test_first_request_starts_an_instance_and_is_served(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client)
    assert doc["instances"] == []
    assert doc["state"] == "active"
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
        response = await through.get("/pid")
    assert response.status_code == 200
    pid = int(response.text)
    doc = (await client.get(doc["details"])).json()
    (instance,) = doc["instances"]
    assert instance["pid"] == pid
    assert instance["state"] == "ready"
    assert instance["requests"] == 1
    assert instance["in_flight"] == 0


async def test_instance_gets_its_port_as_PORT_and_in_the_command(client: httpx.AsyncClient) -> None:
    script = (
        "import os, sys; assert sys.argv[1] == os.environ['PORT']; "
        "os.execv(sys.executable, [sys.executable, sys.argv[2], '--port', sys.argv[1]])"
    )
    doc = await create_pool(client, command=[sys.executable, "-c", script, "{port}", APP])
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
        assert (await through.get("/pid")).status_code == 200
    (instance,) = (await client.get(doc["details"])).json()["instances"]
    assert instance["port"] > 0


async def test_host_header_routes_on_the_agents_port(agent: Agent, client: httpx.AsyncClient) -> None:
    await create_pool(client, listen=None)
    async with httpx.AsyncClient(base_url=agent.url, headers={"Host": "web.localhost"}, timeout=30.0) as c:
        assert (await c.get("/pid")).text.isdigit()
    # The API is still there for its own names.
    assert "pools" in (await client.get("/")).json()


async def test_kill_9_then_the_next_request_still_succeeds(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client)
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
        first = int((await through.get("/pid")).text)
        os.kill(first, signal.SIGKILL)
        await wait_dead([first])
        response = await through.get("/pid")  # on a keep-alive connection to the dead one
        assert response.status_code == 200
        second = int(response.text)
    assert second != first
    doc = (await client.get(doc["details"])).json()
    assert doc["instances"][0]["restarts"] == 1


async def test_crash_mid_request_is_a_502(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client)
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
        pid = int((await through.get("/pid")).text)
        slow = asyncio.ensure_future(through.get("/slow", params={"s": "30"}))
        await wait_http(client, doc["details"], lambda d: d["instances"][0]["in_flight"] == 1)
        os.kill(pid, signal.SIGKILL)
        response = await slow
    assert response.status_code == 502
    assert "closed the connection" in response.text


async def test_100_concurrent_requests_on_a_cold_pool_start_at_most_max(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client, max_instances=3, concurrency=10, start_timeout=30)
    async with httpx.AsyncClient(
        base_url=doc["url"], timeout=60.0, limits=httpx.Limits(max_connections=200)
    ) as through:
        responses = await asyncio.gather(*(through.get("/slow", params={"s": "0.2"}) for _ in range(100)))
    assert all(r.status_code == 200 for r in responses)
    doc = (await client.get(doc["details"])).json()
    assert 1 <= len(doc["instances"]) <= 3
    pids = {r.text.split()[-1] for r in responses}
    assert len(pids) == len(doc["instances"])


async def test_a_cold_start_without_limit_starts_one_instance(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client, max_instances=5, concurrency=0)
    async with httpx.AsyncClient(
        base_url=doc["url"], timeout=60.0, limits=httpx.Limits(max_connections=200)
    ) as through:
        responses = await asyncio.gather(*(through.get("/pid") for _ in range(100)))
    assert {r.status_code for r in responses} == {200}
    assert len((await client.get(doc["details"])).json()["instances"]) == 1


async def test_drain_finishes_requests_in_flight(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client)
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
        pid = int((await through.get("/pid")).text)
        slow = asyncio.ensure_future(through.get("/slow", params={"s": "0.5"}))
        await wait_http(client, doc["details"], lambda d: d["instances"][0]["in_flight"] == 1)
        drained = await client.post(doc["drain"], json={"timeout": 20})
        assert drained.status_code == 200
        assert drained.json()["state"] == "drained"
        assert drained.json()["instances"] == []
        response = await slow
        assert response.status_code == 200
        assert response.text == f"slow done {pid}"
        refused = await through.get("/pid")
        assert refused.status_code == 503
        assert "retry-after" in refused.headers
    assert not pid_alive(pid)
    resumed = await client.post(doc["resume"], json={})
    assert resumed.json()["state"] == "active"
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
        assert (await through.get("/pid")).status_code == 200


async def test_websocket_echo_through_the_router(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client)
    async with aiohttp.ClientSession() as session, session.ws_connect(doc["url"] + "/ws") as ws:
        for text in ("hello", "world" * 1000):
            await ws.send_str(text)
            message = await ws.receive(timeout=10)
            assert message.data == text
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive(timeout=10)).data == b"\x00\x01"


async def test_idle_instances_above_the_minimum_are_stopped(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client, min_instances=1, max_instances=2, concurrency=1, idle_timeout=0.3)
    await wait_http(client, doc["details"], lambda d: len(ready(d)) == 1)
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
        # Long enough for the second instance to start, even on a busy machine.
        responses = await asyncio.gather(*(through.get("/slow", params={"s": "2"}) for _ in range(2)))
    assert len({r.text for r in responses}) == 2  # two instances served them
    doc = await wait_http(client, doc["details"], lambda d: len(d["instances"]) == 1)
    assert doc["instances"][0]["state"] == "ready"


async def test_minimum_instances_run_before_any_request(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client, min_instances=2, max_instances=2)
    doc = await wait_http(client, doc["details"], lambda d: len(ready(d)) == 2)
    assert len({i["port"] for i in doc["instances"]}) == 2


async def test_start_timeout_answers_503_with_retry_after(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client, command=["sleep", "60"], start_timeout=0.5)
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
        started = time.monotonic()
        response = await through.get("/")
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert "was ready within 0.5 s" in response.text
    assert time.monotonic() - started < 5


async def test_http_readiness_check_holds_requests_until_ready(client: httpx.AsyncClient) -> None:
    doc = await create_pool(
        client, command=app_command("--ready-after", "0.5"), ready={"path": "/ready"}, start_timeout=20
    )
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
        response = await through.get("/ready")
    assert response.status_code == 200
    assert response.text == "ready"


async def test_scale_starts_and_retires_instances(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client, max_instances=3)
    scaled = await client.post(doc["scale"], json={"min_instances": 3})
    assert scaled.status_code == 200
    doc = await wait_http(client, doc["details"], lambda d: len(ready(d)) == 3)
    pids = [i["pid"] for i in doc["instances"]]
    scaled = await client.post(doc["scale"], json={"min_instances": 0, "max_instances": 1})
    assert scaled.status_code == 200
    assert len(scaled.json()["instances"]) == 1
    gone = [p for p in pids if p != scaled.json()["instances"][0]["pid"]]
    await wait_dead(gone)
    bad = await client.post(doc["scale"], json={"min_instances": 5})
    assert bad.status_code == 422
    assert bad.json()["field"] == "min_instances"


async def test_delete_stops_instances_and_the_listener(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client, min_instances=1)
    doc = await wait_http(client, doc["details"], lambda d: len(ready(d)) == 1)
    pid = doc["instances"][0]["pid"]
    deleted = await client.post(doc["delete"], json={})
    assert deleted.status_code == 200
    assert not pid_alive(pid)
    assert (await client.get(doc["details"])).status_code == 404
    port = int(doc["url"].rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


async def test_app_pool_from_a_procfile(client: httpx.AsyncClient, tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "Procfile").write_text(f"web: {sys.executable} {APP}\n")
    body = {
        "name": "procapp",
        "source_url": app_dir.as_uri(),
        "process_type": "web",
        "listen": "127.0.0.1:0",
    }
    response = await client.post("/pools", json=body)
    assert response.status_code == 201, response.text
    async with httpx.AsyncClient(base_url=response.json()["url"], timeout=30.0) as through:
        assert (await through.get("/pid")).text.isdigit()


async def test_pools_survive_an_agent_restart(make_agent: AgentFactory) -> None:
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
        await create_pool(client, min_instances=1, idle_timeout=42)
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
        doc = await wait_http(client, "/pools/web", lambda d: len(ready(d)) == 1)
        assert doc["spec"]["idle_timeout"] == 42
        assert doc["origin"] == "api"
        async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
            assert (await through.get("/pid")).status_code == 200


async def test_pools_from_the_config_file(make_agent: AgentFactory) -> None:
    pools = [{"name": "fromfile", "command": app_command(), "min_instances": 1}]
    async with make_agent(pools=pools) as agent, httpx.AsyncClient(base_url=agent.url, timeout=30.0) as c:
        doc = await wait_http(c, "/pools/fromfile", lambda d: len(ready(d)) == 1)
        assert doc["origin"] == "config"
        async with httpx.AsyncClient(base_url=agent.url, headers={"Host": "fromfile.localhost"}) as through:
            assert (await through.get("/pid")).status_code == 200


async def test_a_bad_pool_in_the_config_file_is_refused_at_start(make_agent: AgentFactory) -> None:
    from herder.agent.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pools\[0\].*max_instances"):
        async with make_agent(pools=[{"name": "x", "command": "true", "max_instances": 0}]):
            pass


async def test_stopping_the_agent_stops_every_instance(make_agent: AgentFactory) -> None:
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
        doc = await create_pool(client, min_instances=2, max_instances=2)
        doc = await wait_http(client, doc["details"], lambda d: len(ready(d)) == 2)
        pids = [i["pid"] for i in doc["instances"]]
    assert not any(pid_alive(p) for p in pids)


async def test_an_instance_that_cannot_run_is_reported_at_once(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "Procfile").write_text("worker: true\n")
    body = {"name": "broken", "source_url": app_dir.as_uri(), "process_type": "web", "listen": "127.0.0.1:0"}
    created = await client.post("/pools", json=body)
    assert created.status_code == 201, created.text
    async with httpx.AsyncClient(base_url=created.json()["url"], timeout=30.0) as through:
        started = time.monotonic()
        response = await through.get("/")
    assert response.status_code == 503
    assert "web" in response.text
    assert time.monotonic() - started < 10  # not the 30 s start timeout
    doc = await wait_http(client, "/pools/broken", lambda d: d["instances"] == [])
    assert "failed" in doc["error"]


async def test_a_recorded_pool_whose_port_is_taken_still_starts(make_agent: AgentFactory) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
            await create_pool(client, listen="127.0.0.1:0")
            # Record a port that will be taken at the next start.
            record = agent.config.data_dir / "pools" / "web.json"
            record.write_text(record.read_text().replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"'))
        async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
            doc = (await client.get("/pools/web")).json()
            assert doc["url"] is None
            assert "cannot listen" in doc["error"]
            async with httpx.AsyncClient(base_url=agent.url, headers={"Host": "web.localhost"}) as through:
                assert (await through.get("/pid")).status_code == 200


async def test_an_http_1_0_instance_is_answered_as_http_1_1(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    (tmp_path / "hello.txt").write_text("hello")
    command = [
        sys.executable,
        "-m",
        "http.server",
        "{port}",
        "--bind",
        "127.0.0.1",
        "--directory",
        str(tmp_path),
    ]
    doc = await create_pool(client, command=command)
    host, port = doc["url"].removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for _ in range(2):  # keep-alive on the client's side, whatever the instance does
            writer.write(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            assert await asyncio.wait_for(reader.readexactly(length), 30) == b"hello"
    finally:
        writer.close()
