"""The agent starts, answers its index, runs a command and deletes it."""

from __future__ import annotations

import httpx

from herder.agent import Agent
from tests.helpers import pid_alive, wait_unit


async def test_create_run_delete(agent: Agent, client: httpx.AsyncClient) -> None:
    index = (await client.get("/")).json()
    response = await client.post(
        index["create"], json={"app": "a", "node": "n.0", "command": ["sleep", "100"]}
    )
    assert response.status_code == 201, response.text
    unit = agent.supervisor.units["a.n.0"]
    await wait_unit(unit, lambda u: u.pid is not None)
    pid = unit.pid
    assert pid is not None
    assert pid_alive(pid)
    deleted = await client.post(response.json()["delete"], content="{}")
    assert deleted.status_code == 200
    assert not pid_alive(pid)
    assert (await client.get(index["list"])).json() == {"processes": []}
