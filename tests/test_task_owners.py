"""Every task has an owner (issue 13): stopping a component cancels and awaits what it ran.

The RPC peer's handlers belong to ``Peer.run()``; a pool's reaper, controls and
retirements to its ``run()``; the pools and the proxy's waits to ``Router.run()``;
the sessions' tasks to ``SessionManager.run()``. Each test drives the real thing on
loopback and checks that nothing it started outlives it.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import httpx
import pytest

from herder.rpc import ConnectionLost, Method, Peer, Registry, RemoteError, StreamTransport
from herder.taskgroup import OwnedTaskGroup
from herder.wire import codec_for
from tests.conftest import AgentFactory

APP = str(Path(__file__).parent / "apps" / "pool_app.py")
# Prefixes of the names given to the tasks of the router, its pools and the sessions.
OWNED_PREFIXES = ("router", "pool:", "proxy:", "sessions:", "session-", "end-session-")


async def test_an_owned_group_contains_failures_and_stop_cancels_what_is_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    owned = OwnedTaskGroup("unit")

    async def never() -> None:
        await asyncio.Event().wait()

    assert owned.spawn(never(), "early") is None  # run() is not up: nothing starts (no warning)
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        runner = tg.create_task(owned.run())
        await owned.wait_up()
        assert owned.running
        waiting = owned.spawn(never(), "waiting")
        assert waiting is not None

        async def fail() -> None:
            raise ValueError("one task's bug")

        failing = owned.spawn(fail(), "failing")
        assert failing is not None
        await asyncio.wait({failing})
        assert "unit: failing failed" in caplog.text
        assert not waiting.done()  # the failure did not spread
        await owned.stop()
        assert waiting.cancelled()
        assert runner.done()
        assert owned.spawn(never(), "late") is None


async def test_a_child_group_cancelled_before_it_started_is_not_waited_for() -> None:
    parent, child = OwnedTaskGroup("parent"), OwnedTaskGroup("child")
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        tg.create_task(parent.run())
        await parent.wait_up()
        task = child.start_in(parent, "child")
        assert task is not None
        task.cancel()  # before its first step: its group is never entered
        await child.wait_up()
        assert not child.running
        await parent.stop()


async def peer_pair(registry: Registry) -> tuple[Peer, Peer]:
    """A serving peer (with ``registry``) and a calling one, over a socketpair."""
    left, right = socket.socketpair()
    server_reader, server_writer = await asyncio.open_connection(sock=left)
    client_reader, client_writer = await asyncio.open_connection(sock=right)
    codec = codec_for("msgpack")
    server = Peer(StreamTransport(server_reader, server_writer), codec, registry=registry, principal="test")
    client = Peer(StreamTransport(client_reader, client_writer), codec)
    return server, client


async def test_the_peer_cancels_and_awaits_its_handlers_when_the_connection_ends() -> None:
    started = asyncio.Event()
    finished: list[str] = []

    async def hang() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            finished.append("hang")

    async def boom() -> None:
        raise ValueError("broken handler")

    registry = Registry()
    registry.add(Method.of(hang, name="hang", auth=False))
    registry.add(Method.of(boom, name="boom", auth=False))
    server, client = await peer_pair(registry)

    async def call_hang() -> None:
        with pytest.raises(ConnectionLost):  # this side closes while it runs there
            await client.call("hang")

    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        serving = tg.create_task(server.run())
        async with client:
            hanging = tg.create_task(call_hang())
            await started.wait()
            with pytest.raises(RemoteError, match="broken handler"):
                await client.call("boom")
            # One failing handler neither ends the connection nor the call beside it.
            assert await client.call("ping", target="meta") == "pong"
            assert not hanging.done()
        await asyncio.wait({serving})
        # run() has returned: the handler still running was cancelled, and awaited.
        assert finished == ["hang"]
        assert server.closed


def leftovers() -> list[str]:
    return sorted(
        name
        for task in asyncio.all_tasks()
        if not task.done() and (name := task.get_name()).startswith(OWNED_PREFIXES)
    )


async def test_stopping_the_agent_leaves_no_task_of_the_router_pools_or_sessions(
    make_agent: AgentFactory,
) -> None:
    pool = {
        "name": "web",
        "command": [sys.executable, APP, "--port", "{port}"],
        "listen": "127.0.0.1:0",
        "min_instances": 1,
    }
    async with make_agent() as agent:
        async with httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
            response = await client.post("/pools", json=pool)
            assert response.status_code == 201, response.text
            async with httpx.AsyncClient(base_url=response.json()["url"], timeout=30.0) as through:
                assert (await through.get("/pid")).status_code == 200
        running = leftovers()
        assert "router" in running
        assert "pool:web" in running
        assert "pool:web:reaper" in running
        assert "sessions:reaper" in running
    assert leftovers() == []
