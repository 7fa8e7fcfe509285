"""``herder up`` (what ``make up`` runs): a manager and an agent working for it, one command."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.helpers import HERDER, pid_alive


async def test_up_runs_a_task_end_to_end(tmp_path: Path, db_url: str) -> None:
    err_path = tmp_path / "up.stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [
                *(HERDER, "up", "--data-dir", str(tmp_path / "data"), "--db", db_url),
                *("--agent-port", "0", "--manager-port", "0"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        match = None
        while match is None and time.monotonic() < deadline and proc.poll() is None:
            match = re.search(r"manager on (http://\S+), agent on (http://\S+)", err_path.read_text())
            await asyncio.sleep(0.05)
        assert match is not None, err_path.read_text()
        manager_url, agent_url = match.groups()
        async with httpx.AsyncClient(base_url=manager_url, timeout=30) as client:
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
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert not pid_alive(proc.pid)
