"""``logs: "discard"`` (issue 16): no log file is ever made, the attach stream still works.

The default stays ``"files"`` (docs/limits.md says why); both are tried side by side on
a real agent with a real child that writes to both streams.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import aiohttp
import httpx

from herder.agent import Agent
from tests.helpers import wait_unit

# Writes a line to each stream, then waits for SIGUSR1 to write one more (so that an
# attach made after the first lines sees one live line too), then exits.
SCRIPT = (
    "import signal, sys\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
    "print('out-1', flush=True)\n"
    "print('err-1', file=sys.stderr, flush=True)\n"
    "signal.sigwait({signal.SIGUSR1})\n"
    "print('out-2', flush=True)\n"
)


async def create(client: httpx.AsyncClient, node: str, **fields: object) -> dict[str, object]:
    body = {
        "app": "lg",
        "node": node,
        "command": [sys.executable, "-c", SCRIPT],
        "restart": "never",
        **fields,
    }
    created = await client.post("/create-process", json=body)
    assert created.status_code == 201, created.text
    doc: dict[str, object] = created.json()
    return doc


async def test_discard_writes_no_file_but_attach_shows_every_line(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    proc = await create(client, "quiet.0", logs="discard")
    unit = agent.supervisor.units["lg.quiet.0"]
    await wait_unit(unit, lambda u: u.output.lines_total >= 2)
    attach = proc["attach"]
    assert isinstance(attach, str)
    async with aiohttp.ClientSession() as session, session.ws_connect(attach) as ws:
        frames = [json.loads((await ws.receive(timeout=10)).data) for _ in range(2)]
        assert sorted(f["line"] for f in frames) == ["err-1", "out-1"]
        assert unit.pid is not None
        os.kill(unit.pid, signal.SIGUSR1)
        live = json.loads((await ws.receive(timeout=10)).data)
        assert live == {"stream": "stdout", "line": "out-2"}
    await wait_unit(unit, lambda u: u.state == "exited")
    logs = agent.config.data_dir / "logs"
    assert sorted(p.name for p in logs.iterdir() if p.name.startswith("lg.quiet.0")) == []


async def test_files_is_the_default_and_keeps_both_streams(agent: Agent, client: httpx.AsyncClient) -> None:
    await create(client, "loud.0")
    unit = agent.supervisor.units["lg.loud.0"]
    await wait_unit(unit, lambda u: u.output.lines_total >= 2)
    assert unit.pid is not None
    os.kill(unit.pid, signal.SIGUSR1)
    await wait_unit(unit, lambda u: u.state == "exited")
    logs = agent.config.data_dir / "logs"
    assert (logs / "lg.loud.0.out.log").read_bytes() == b"out-1\nout-2\n"
    assert (logs / "lg.loud.0.err.log").read_bytes() == b"err-1\n"
