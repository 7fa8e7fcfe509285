"""#12 §3: the keeper is the agent's watchdog; a hung agent's leased work is stopped.

A SIGSTOPped agent cannot stop its own children, and the manager gives its work to
another worker once its lease runs out: two runs of one attempt. The agent pings its
keeper; one that shows no life for longer than its lease has its leased work (units run
for the manager) killed by the keeper. The user's own processes are left alone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx

from herder.agent.processes.descendants import read_ledger
from herder.agent.processes.keeper import ledger_path
from tests.helpers import AgentProcess, pid_alive, poll, wait_dead, wait_http
from tests.manager.conftest import ManagerFactory

HEARTBEAT_S = 0.2  # the lease is three heartbeats: 0.6 s


async def test_a_stopped_agents_leased_work_is_killed_and_nothing_else(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "task.pid"
    pids: list[int] = []
    async with make_manager(heartbeat_interval_s=HEARTBEAT_S) as manager:
        agent = AgentProcess(tmp_path / "data", "--manager", manager.url, "--name", "hung").start()
        try:
            async with httpx.AsyncClient(base_url=manager.url, timeout=30) as client:
                await wait_http(client, "/workers", lambda d: d.get("hung", {}).get("connection") == "online")
                async with httpx.AsyncClient(base_url=agent.url, timeout=30) as own:
                    body = {"app": "mine", "node": "sleep.0", "command": ["sleep", "1000"]}
                    created = await own.post("/create-process", json=body)
                    assert created.status_code == 201, created.text
                    doc = await wait_http(own, created.json()["details"], lambda d: d["pid"] is not None)
                    users = int(doc["pid"])
                    pids.append(users)
                argv = ["/bin/sh", "-c", f"echo $$ > {marker}; exec sleep 1000"]
                # Attempts to spare: on a loaded machine a push can come after its 0.6 s lease
                # could end, and the agent rightly does not start it (the next attempt runs).
                task = {"type": "command", "settings": {"argv": argv}, "max_attempts": 5}
                assert (await client.post("/tasks", json=task)).status_code == 202
                await poll(lambda: marker.exists() and marker.read_text().strip() != "")
                work = int(marker.read_text())
                pids.append(work)
                assert pid_alive(work)
                # Stopped the moment the work has run a line: leased work waits at a gate
                # until the ledger has it, so the keeper knows it whenever the agent stops.
                agent.signal(signal.SIGSTOP)
                ledger = ledger_path(tmp_path / "data")
                assert any(i[0] == work and leased for i, leased in read_ledger(ledger))
                stopped = time.monotonic()
                await wait_dead([work], timeout_s=3 * HEARTBEAT_S + 3)
                # not before its lease less the margin (a third of it): the agent would have stopped it then
                assert time.monotonic() - stopped >= 2 * HEARTBEAT_S * 0.9
                assert pid_alive(users)  # the user's own process is not the watchdog's
                agent.signal(signal.SIGCONT)
                agent.signal(signal.SIGTERM)
                assert await asyncio.to_thread(agent.wait) == 0
        finally:
            if agent.proc is not None and agent.proc.poll() is None:
                agent.signal(signal.SIGCONT)
            agent.kill()
            for pid in pids:
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
