"""The agent's live feed, WS /events (herder.agent.api.events), without a browser: a real
agent with a token, real processes and a real pool."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets

from herder.agent.api.events import PENDING_LIMIT, Subscriber
from tests.conftest import AgentFactory

TOKEN = "s3cret-agent-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def next_matching(ws: Any, want: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first message that ``want`` accepts (others are skipped)."""
    while True:
        message = json.loads(await ws.recv(decode=True))
        if want(message):
            return message


async def test_a_snapshot_then_each_process_and_pool_change(make_agent: AgentFactory) -> None:
    async with (
        make_agent(auth_token=TOKEN) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=AUTH) as http,
    ):
        url = agent.url.replace("http://", "ws://") + "/events"
        async with websockets.connect(url, additional_headers=AUTH, open_timeout=10) as ws:
            first = json.loads(await ws.recv(decode=True))
            assert first == {"type": "snapshot", "processes": [], "pools": []}
            created = await http.post(
                "/create-process", json={"app": "ev", "node": "a", "command": "sleep 30"}
            )
            assert created.status_code == 201
            running = await next_matching(
                ws, lambda m: m["type"] == "process" and m["process"]["state"] == "running"
            )
            assert running["process"]["slug"] == "ev.a"
            assert running["process"]["attach"].startswith("ws://")
            deleted = await http.post("/delete-process/ev.a")
            assert deleted.status_code == 200
            assert await next_matching(ws, lambda m: m["type"] == "process_deleted") == {
                "type": "process_deleted",
                "slug": "ev.a",
            }
            pool = {"name": "evp", "command": "python3 -m http.server {port} --bind 127.0.0.1"}
            assert (await http.post("/pools", json=pool)).status_code == 201
            await next_matching(ws, lambda m: m["type"] == "pool" and m["pool"]["name"] == "evp")
            scaled = await http.post("/pools/evp/scale", json={"min_instances": 2, "max_instances": 2})
            assert scaled.status_code == 200
            ready = await next_matching(
                ws,
                lambda m: (
                    m["type"] == "pool" and [i["state"] for i in m["pool"]["instances"]] == ["ready"] * 2
                ),
            )
            assert ready["pool"]["spec"]["min_instances"] == 2
            assert (await http.post("/pools/evp/delete", json={"timeout": 1})).status_code == 200
            assert await next_matching(ws, lambda m: m["type"] == "pool_deleted") == {
                "type": "pool_deleted",
                "name": "evp",
            }


async def test_the_feed_needs_the_token_and_takes_it_as_a_browser_offers_it(make_agent: AgentFactory) -> None:
    async with make_agent(auth_token=TOKEN) as agent:
        url = agent.url.replace("http://", "ws://") + "/events"
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(url, open_timeout=10):
                pass
        assert refused.value.response.status_code == 401
        offer: Any = ["herder", "herder.bearer.wrong"]
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(url, subprotocols=offer, open_timeout=10):
                pass
        offer = ["herder", f"herder.bearer.{TOKEN}"]
        async with websockets.connect(url, subprotocols=offer, open_timeout=10) as ws:
            assert ws.subprotocol == "herder"  # a browser fails a connection without one
            assert json.loads(await ws.recv(decode=True))["type"] == "snapshot"


def test_a_subscriber_that_falls_behind_is_resynced_not_grown() -> None:
    sub = Subscriber({})
    for n in range(PENDING_LIMIT):
        sub.push(("process", f"a.{n}"), object())  # type: ignore[arg-type]
    sub.push(("process", "a.0"), object())  # type: ignore[arg-type]  # known: coalesced
    assert len(sub.pending) == PENDING_LIMIT
    assert not sub.behind
    sub.push(("process", "one.more"), object())  # type: ignore[arg-type]
    assert sub.behind
    assert sub.pending == {}


async def test_an_open_stream_does_not_hold_the_agent_when_it_stops(make_agent: AgentFactory) -> None:
    async with make_agent() as agent:
        url = agent.url.replace("http://", "ws://") + "/events"
        ws = await websockets.connect(url, open_timeout=10)
        assert json.loads(await ws.recv(decode=True))["type"] == "snapshot"
    # The agent has stopped (its context is left) with the stream open: the stream was closed.
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await ws.recv()


async def test_an_operators_stop_and_start_go_out_as_process_changes(make_agent: AgentFactory) -> None:
    async with (
        make_agent(auth_token=TOKEN) as agent,
        httpx.AsyncClient(base_url=agent.url, headers=AUTH, timeout=30) as http,
    ):
        url = agent.url.replace("http://", "ws://") + "/events"
        async with websockets.connect(url, additional_headers=AUTH, open_timeout=10) as ws:
            assert json.loads(await ws.recv(decode=True))["type"] == "snapshot"
            body = {"app": "ev", "node": "a", "command": "exec sleep 30"}
            assert (await http.post("/create-process", json=body)).status_code == 201
            await next_matching(ws, lambda m: m["type"] == "process" and m["process"]["state"] == "running")
            assert (await http.post("/stop-process/ev.a")).status_code == 200
            stopped = await next_matching(
                ws, lambda m: m["type"] == "process" and m["process"]["state"] == "stopped"
            )
            assert stopped["process"]["pid"] is None
            assert stopped["process"]["stop"].endswith("/stop-process/ev.a")
            assert (await http.post("/start-process/ev.a")).status_code == 200
            await next_matching(ws, lambda m: m["type"] == "process" and m["process"]["state"] == "running")


async def test_sessions_follow_the_snapshot_and_each_change(make_agent: AgentFactory) -> None:
    from herder.client import Agent as Client
    from tests.test_sessions import session_config

    async with make_agent(**session_config()) as agent:
        url = agent.url.replace("http://", "ws://") + "/events"
        async with websockets.connect(url, open_timeout=10) as ws:
            assert json.loads(await ws.recv(decode=True))["type"] == "snapshot"  # no sessions: no more
            async with Client(agent.url) as client:
                session = await client.open_session("testkit")
                opened = await next_matching(
                    ws, lambda m: m["type"] == "sessions" and [s["state"] for s in m["sessions"]] == ["open"]
                )
                (doc,) = opened["sessions"]
                assert (doc["id"], doc["product"], doc["attached"]) == (session.id, "testkit", True)
                assert "resume_token" not in doc
                async with websockets.connect(url, open_timeout=10) as late:
                    assert json.loads(await late.recv(decode=True))["type"] == "snapshot"
                    assert json.loads(await late.recv(decode=True))["sessions"] == opened["sessions"]
                await session.close()
                await next_matching(ws, lambda m: m["type"] == "sessions" and m["sessions"] == [])
