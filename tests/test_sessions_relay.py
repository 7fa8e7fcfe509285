"""The relay of calls to sessions as bytes (issue 19): what the ordinary relay did, it does.

Calls from a MessagePack connection to a session pass through the agent undecoded
(``agent/sessions/relay.py``); those with callbacks, and every JSON connection, take the
ordinary relay. The product ``testkit`` lives in ``tests/fixtures/product_pkg``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from typing import Any

import pytest

from herder.agent import Agent
from herder.agent.sessions.relay import RawRelay
from herder.client import Agent as Client
from herder.rpc import RemoteError, connect
from tests.conftest import AgentFactory
from tests.helpers import poll, wait_dead
from tests.test_sessions import session_config


@pytest.fixture
async def agent(make_agent: AgentFactory) -> Any:
    async with make_agent(**session_config(spare_host=False), protocol_port=0) as running:
        yield running


def relay(agent: Agent) -> RawRelay:
    assert agent.runtime is not None
    assert agent.runtime.sessions is not None
    return agent.runtime.sessions.relay


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_calls_pass_as_bytes_with_their_arguments_and_answers(agent: Agent, transport: str) -> None:
    url = agent.url if transport == "ws" else agent.protocol_url
    assert url is not None
    data = random.Random(19).randbytes(8 * 1024 * 1024)  # MAX_CHUNK: the largest call
    async with Client(url) as client, client.session("testkit") as s:
        before = relay(agent).relayed
        answer = await s.ext("echo").say("hi", target="a kwarg named target", timeout=3)
        assert answer["text"] == "hi"
        assert answer["extra"] == {"target": "a kwarg named target", "timeout": 3}
        with pytest.raises(RemoteError) as caught:
            await s.ext("echo").fail("boom")
        assert (caught.value.code, caught.value.type, caught.value.message) == (
            "application_error",
            "ValueError",
            "boom",
        )
        with pytest.raises(RemoteError, match="unknown_method"):
            await s.ext("echo").nonexistent()
        assert relay(agent).relayed - before == 3
    async with Client(url) as client, client.session("shell") as s:
        handle = await s.fs.open("big.bin", "w+")
        assert await asyncio.gather(*(s.fs.write(handle, data, n * len(data)) for n in range(2))) == [
            len(data),
            len(data),
        ]
        assert await s.fs.read(handle, len(data), len(data)) == data
        await s.fs.close(handle)
        assert relay(agent).in_flight == 0


async def test_callbacks_and_json_take_the_ordinary_relay(agent: Agent) -> None:
    async with Client(agent.url) as client, client.session("testkit") as s:
        before = relay(agent).relayed
        assert await s.ext("echo").call_back(lambda i: i * 10, 3) == [0, 10, 20]
        assert relay(agent).relayed == before
    async with connect(agent.rpc_url, codecs=("json",)) as peer:
        doc = await peer.call("open_session", "testkit", target="meta")
        answer = await peer.call("echo.say", "json", target=doc["id"])
        assert answer["text"] == "json"
        assert relay(agent).relayed == before
        await peer.call("close_session", doc["id"], target="meta")


async def test_a_cancelled_call_is_cancelled_in_the_host(agent: Agent) -> None:
    async with Client(agent.url) as client, client.session("shell") as s:
        p = await s.proc.launch(["sleep", "30"])
        before = relay(agent).relayed
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await s.proc.wait(p.id)
        assert relay(agent).relayed == before + 1
        await poll(lambda: relay(agent).in_flight == 0)
        # The session goes on: the host's wait was cancelled, not the host.
        assert [e["running"] for e in await s.proc.list()] == [True]
        await p.kill("KILL")
        assert await p.wait() == -signal.SIGKILL
    assert relay(agent).in_flight == 0


async def test_a_client_that_goes_leaves_nothing_in_flight(agent: Agent) -> None:
    client = Client(agent.url)
    await client.__aenter__()
    s = await client.open_session("shell")
    p = await s.proc.launch(["sleep", "30"])
    waiting = asyncio.ensure_future(s.proc.wait(p.id))
    await poll(lambda: relay(agent).in_flight == 1)
    await client.__aexit__(None, None, None)
    await poll(lambda: relay(agent).in_flight == 0)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the SDK's own error for a lost connection
        await waiting
    # The session waits for a resume, its program still running (the wait was cancelled).
    async with Client(agent.url) as again:
        back = await again.resume(s.id, s.resume_token)
        assert [e["running"] for e in await back.proc.list()] == [True]
        await back.close()
    await wait_dead([p.pid])


async def test_a_call_in_flight_when_the_host_dies_says_why(agent: Agent) -> None:
    async with Client(agent.url) as client:
        s = await client.open_session("shell")
        p = await s.proc.launch(["sleep", "30"])
        host_pid = next(d["pid"] for d in await client.sessions() if d["id"] == s.id)
        waiting = asyncio.ensure_future(s.proc.wait(p.id))
        await poll(lambda: relay(agent).in_flight == 1)
        os.kill(host_pid, signal.SIGKILL)
        with pytest.raises(RemoteError) as caught:
            await asyncio.wait_for(waiting, 30)
        assert caught.value.code == "unknown_target"
        assert "crashed" in caught.value.message
        assert relay(agent).in_flight == 0


async def test_relayed_calls_are_counted_as_forwarded(agent: Agent) -> None:
    async with Client(agent.url) as client, client.session("testkit") as s:
        for _ in range(3):
            await s.ext("echo").say("x")
        assert relay(agent).relayed >= 3
        import httpx

        async with httpx.AsyncClient() as http:
            text = (await http.get(agent.url + "/metrics")).text
    assert 'method="forwarded"' in text
