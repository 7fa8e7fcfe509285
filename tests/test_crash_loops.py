"""Crash loops (issue 14): repeated failures grow the delay whatever each run's length, and say so.

The children run a little longer than the test config's ``stable_s`` (0.5 s) before they
exit 1, like jupyter-server refusing to run as root: under the old rule each run counted
as stable and the process restarted at once, for ever, saying nothing useful.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from herder.agent import Agent
from tests.conftest import AgentFactory
from tests.helpers import wait_http, wait_unit

# Longer than the test config's stable_s: each run would count as stable on its own.
FLAPPING = [
    sys.executable,
    "-c",
    "import sys, time; print('starting'); print('Running as root is not recommended', file=sys.stderr); "
    "time.sleep(0.6); sys.exit(1)",
]
WINDOW = {"supervision": {"crash_window_s": 30.0, "crash_loop_after": 3}}


def delays(agent: Agent, slug: str) -> list[float]:
    unit = agent.supervisor.units[slug]
    found = []
    for stream, line in unit.output.ring:
        text = line.decode()
        if stream == "herder" and "restarting in " in text:
            found.append(float(text.split("restarting in ")[1].split(" s")[0]))
    return found


@pytest.fixture
async def agent(make_agent: AgentFactory) -> AsyncIterator[Agent]:
    async with make_agent(**WINDOW) as running:
        yield running


async def create(client: httpx.AsyncClient, node: str, command: list[str], **extra: Any) -> dict[str, Any]:
    body = {"app": "loop", "node": node, "command": command, **extra}
    response = await client.post("/create-process", json=body)
    assert response.status_code == 201, response.text
    doc: dict[str, Any] = response.json()
    return doc


async def test_runs_longer_than_stable_still_back_off_and_are_named(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    await create(client, "flap.0", FLAPPING)
    unit = agent.supervisor.units["loop.flap.0"]
    await wait_unit(unit, lambda u: u.crash_loop is not None, timeout_s=20)
    # The first exit of a run past stable_s restarts at once; the next ones back off.
    assert delays(agent, unit.slug)[:3] == [0.0, 0.1, 0.2]
    status = (await client.get("/process-status/loop.flap.0")).json()
    error = status["error"]
    assert error.startswith("crash loop: exited 1 3 times in "), error
    assert error.endswith("; last stderr: Running as root is not recommended"), error
    # While it runs between two crashes, the document still says what is going on.
    await wait_unit(unit, lambda u: u.state == "running" and u.restarts >= 3, timeout_s=20)
    assert unit.error is not None
    assert unit.error.startswith("crash loop: ")


async def test_a_run_that_outlives_the_window_ends_the_loop(make_agent: AgentFactory, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    # Three quick failures, then a run that stays up.
    script = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\n"
        "if n < 3:\n"
        "    print(f'failure {n}', file=sys.stderr); sys.exit(2)\n"
        "time.sleep(100)\n"
    )
    config = {"supervision": {"crash_window_s": 1.0, "crash_loop_after": 3}}
    async with make_agent(**config) as agent, httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
        await create(client, "heal.0", [sys.executable, "-c", script])
        unit = agent.supervisor.units["loop.heal.0"]
        await wait_unit(unit, lambda u: u.crash_loop is not None)
        assert unit.crash_loop is not None
        assert "exited 2 3 times" in unit.crash_loop
        assert unit.crash_loop.endswith("last stderr: failure 2")
        await wait_unit(unit, lambda u: u.state == "running" and u.crash_loop is None)
        assert unit.error is None
        status = (await client.get("/process-status/loop.heal.0")).json()
        assert status["error"] is None


async def test_a_pool_answers_a_crash_loop_at_once(agent: Agent, client: httpx.AsyncClient) -> None:
    body = {"name": "jupyter", "command": FLAPPING, "listen": "127.0.0.1:0", "start_timeout": 120}
    created = await client.post("/pools", json=body)
    assert created.status_code == 201, created.text
    async with httpx.AsyncClient(base_url=created.json()["url"], timeout=60.0) as through:
        started = time.monotonic()
        response = await through.get("/")
        waited = time.monotonic() - started
        assert response.status_code == 503
        assert "crash loop: exited 1 3 times" in response.text
        assert "last stderr: Running as root is not recommended" in response.text
        assert waited < 20  # not the 120 s start timeout
        # A request that comes while the loop goes on is told at once.
        started = time.monotonic()
        again = await through.get("/")
        assert again.status_code == 503
        assert "crash loop" in again.text
        assert time.monotonic() - started < 2
    doc = await wait_http(client, "/pools/jupyter", lambda d: d["error"] is not None)
    assert doc["error"].startswith("instance jupyter.1: crash loop: exited 1 ")
    assert "last stderr: Running as root is not recommended" in doc["error"]
