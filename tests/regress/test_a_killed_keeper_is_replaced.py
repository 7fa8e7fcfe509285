"""#12 §5: the agent notices its keeper's death at once, says so, and starts another.

Before, a killed keeper went unnoticed, and a later SIGKILL of the agent left its
children running.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from tests.helpers import AgentProcess, keepers_of, pid_alive, poll, wait_dead, wait_http


async def test_a_killed_keeper_is_replaced_and_the_next_one_does_its_job(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "data").start()
    child = 0
    try:
        async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
            body = {"app": "k", "node": "sleep.0", "command": ["sleep", "1000"]}
            response = await client.post("/create-process", json=body)
            assert response.status_code == 201, response.text
            doc = await wait_http(client, response.json()["details"], lambda d: d["pid"] is not None)
            child = int(doc["pid"])
        [first] = keepers_of(agent.pid)
        os.kill(first, signal.SIGKILL)
        await poll(lambda: [p for p in keepers_of(agent.pid) if p != first] != [], timeout_s=5)
        [second] = keepers_of(agent.pid)
        assert second != first
        await poll(lambda: f"keeper (pid {first})" in agent.stderr(), timeout_s=5)
        assert "WARNING" in next(
            line for line in agent.stderr().splitlines() if f"keeper (pid {first})" in line
        )
        agent.signal(signal.SIGKILL)
        agent.wait()
        await wait_dead([child], timeout_s=5)
    finally:
        agent.kill()
        if child and pid_alive(child):
            os.kill(child, signal.SIGKILL)
