"""Attach: recent lines replayed, then live ones; stderr told apart; slow readers harmless."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import aiohttp
import httpx
import pytest

from herder.agent import Agent
from tests.helpers import wait_http, wait_unit


async def create(client: httpx.AsyncClient, node: str, argv: list[str], restart: str = "always") -> dict:
    response = await client.post(
        "/create-process", json={"app": "t", "node": node, "command": argv, "restart": restart}
    )
    assert response.status_code == 201, response.text
    return response.json()


async def receive_until(ws: aiohttp.ClientWebSocketResponse, count: int, timeout_s: float = 10.0) -> list:
    frames = []
    deadline = time.monotonic() + timeout_s
    while len(frames) < count:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frames.append(msg.data)
    return frames


async def test_replay_then_live_lines_with_streams(agent: Agent, client: httpx.AsyncClient) -> None:
    script = (
        "import signal, sys\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
        "print('out-1', flush=True)\n"
        "print('err-1', file=sys.stderr, flush=True)\n"
        "signal.sigwait({signal.SIGUSR1})\n"
        "print('out-2', flush=True)\n"
        "signal.sigwait({signal.SIGUSR1})\n"
    )
    proc = await create(client, "replay.0", [sys.executable, "-c", script], restart="never")
    unit = agent.supervisor.units["t.replay.0"]
    await wait_unit(unit, lambda u: u.output.lines_total >= 2)
    async with aiohttp.ClientSession() as session, session.ws_connect(proc["attach"]) as ws:
        replayed = [json.loads(f) for f in await receive_until(ws, 2)]
        assert {"stream": "stdout", "line": "out-1"} in replayed
        assert {"stream": "stderr", "line": "err-1"} in replayed
        assert unit.pid is not None
        os.kill(unit.pid, signal.SIGUSR1)
        live = json.loads((await receive_until(ws, 1))[0])
        assert live == {"stream": "stdout", "line": "out-2"}


async def test_text_format_and_no_replay(agent: Agent, client: httpx.AsyncClient) -> None:
    argv = ["/bin/sh", "-c", "echo first; echo oops >&2; exec sleep 100"]
    proc = await create(client, "text.0", argv)
    unit = agent.supervisor.units["t.text.0"]
    await wait_unit(unit, lambda u: u.output.lines_total >= 2)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(proc["attach"] + "?format=text") as ws:
            frames = await receive_until(ws, 2)
            assert sorted(frames) == ["first", "stderr: oops"]
        async with session.ws_connect(proc["attach"] + "?replay=false") as ws:
            with pytest.raises(TimeoutError):
                await ws.receive(timeout=0.3)


async def test_attach_unknown_slug_is_404(agent: Agent) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(agent.url.replace("http", "ws") + "/attach-console/no.such")
        assert info.value.status == 404


async def test_delete_closes_attached_stream(agent: Agent, client: httpx.AsyncClient) -> None:
    proc = await create(client, "closing.0", ["sleep", "100"])
    async with aiohttp.ClientSession() as session, session.ws_connect(proc["attach"]) as ws:
        assert (await client.post(proc["delete"], content="{}")).status_code == 200
        frames = []
        for _ in range(10):  # the agent's own "stopped" line, then the close
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frames.append(json.loads(msg.data))
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert frames[-1]["stream"] == "herder"
        assert frames[-1]["line"].startswith("stopped")


async def test_slow_reader_stalls_nothing(agent: Agent, client: httpx.AsyncClient) -> None:
    """A reader that never reads: the child still finishes at full speed, others still read."""
    lines = 200_000
    script = (
        f"import sys\nfor i in range({lines}):\n    sys.stdout.write(f'line {{i}} ' + 'x' * 60 + chr(10))\n"
    )
    # The child waits for a go signal (a file) so both readers are attached first.
    go = agent.config.data_dir / "go"
    argv = [
        sys.executable,
        "-c",
        f"import os,time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\n" + script,
    ]
    proc = await create(client, "spew.0", argv, restart="never")
    unit = agent.supervisor.units["t.spew.0"]
    async with aiohttp.ClientSession() as session:
        stuck = await session.ws_connect(proc["attach"])  # never read from
        fast = await session.ws_connect(proc["attach"] + "?format=text")
        go.touch()
        await wait_unit(unit, lambda u: u.state == "exited", timeout_s=30)
        # The agent answers while the stuck reader's socket is full.
        status = await wait_http(client, proc["details"], lambda d: d["state"] == "exited")
        assert status["exit_code"] == 0
        logs = agent.config.data_dir / "logs"
        written = sum(p.read_bytes().count(b"\n") for p in logs.glob("t.spew.0.out.log*"))
        assert written == lines
        # The fast reader gets lines (possibly told that some were dropped).
        got = await receive_until(fast, 1000, timeout_s=20)
        assert any(f.startswith("line ") for f in got)
        await stuck.close()
        await fast.close()
