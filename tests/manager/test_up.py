"""``herder up`` (what ``make up`` runs): a manager and an agent working for it, one command."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from herder.auth import init_keys, tokens
from herder.manager.authority import ISSUER, TOKEN_AUDIENCE
from tests.helpers import UpProcess, pid_alive


@pytest.mark.parametrize("keys", [False, True], ids=["open", "keys"])
async def test_up_runs_a_task_end_to_end(tmp_path: Path, db_url: str, keys: bool) -> None:
    """Open, or with keys in the data dir: then the local agent links with a key of its own."""
    headers: dict[str, str] = {}
    if keys:
        signing = init_keys(tmp_path / "data")
        token = tokens.issue(
            signing, {"role": "admin"}, issuer=ISSUER, audience=TOKEN_AUDIENCE, ttl_s=600, subject="t"
        )
        headers = {"Authorization": f"Bearer {token}"}
    up = UpProcess(tmp_path / "data", "--db", db_url).start()
    try:
        manager_url, agent_url = up.manager_url, up.agent_url
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=manager_url, timeout=30, headers=headers) as client:
            body = {"type": "command", "settings": {"shell": "echo hello from up"}}
            task = (await client.post("/tasks", json=body)).json()
            status = ""
            while status != "completed" and time.monotonic() < deadline + 30:
                status = (await client.get(f"/tasks/{task['id']}")).json()["status"]
                await asyncio.sleep(0.05)
            assert status == "completed"
            assert "hello from up" in (await client.get(f"/tasks/{task['id']}/log")).text
            workers = (await client.get("/workers")).json()
            assert [w["agent_url"] for w in workers.values()] == [agent_url]
        assert up.stop() == 0
    finally:
        up.stop()
    assert not pid_alive(up.pid)
