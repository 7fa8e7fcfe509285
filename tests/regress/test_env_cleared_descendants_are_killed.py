"""#12 §5: a descendant that clears its environment and leaves its session still dies.

``env -i setsid sh -c 'trap "" TERM; sleep 1000'`` carries no marker, is in no group of
the agent's and ignores SIGTERM. It must die on a delete, when its main process exits,
on a session close, with a SIGKILLed agent, and at the next agent's start if the keeper
was lost too. The agent finds it as a child subreaper walking the process tree, and
records what it found (pid and start time) for the keeper and its successor.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from herder.client import Agent as Client
from tests.conftest import AgentFactory
from tests.helpers import AgentProcess, UpProcess, keepers_of, pid_alive, poll, wait_dead, wait_http

ESCAPEE = "env -i setsid sh -c 'trap \"\" TERM; echo $$ > {pid_file}; sleep 1000'"


def escapee_tree(pid_file: Path) -> list[int]:
    """The escaped shell and its sleep, once both run."""
    shell = int(pid_file.read_text())
    children: list[int] = []
    for task in os.listdir(f"/proc/{shell}/task"):
        with open(f"/proc/{shell}/task/{task}/children") as fh:
            children += [int(p) for p in fh.read().split()]
    return [shell, *children]


async def wait_escapee(pid_file: Path) -> list[int]:
    def ready() -> bool:
        try:
            return pid_file.read_text().strip() != "" and len(escapee_tree(pid_file)) == 2
        except (OSError, ValueError):
            return False

    await poll(ready)
    pids = escapee_tree(pid_file)
    assert all(pid_alive(p) for p in pids)
    return pids


async def create(url: str, node: str, command: str, restart: str = "always") -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        body = {"app": "esc", "node": node, "command": ["/bin/sh", "-c", command], "restart": restart}
        response = await client.post("/create-process", json=body)
        assert response.status_code == 201, response.text
        await wait_http(client, response.json()["details"], lambda d: d["pid"] is not None)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


async def test_the_escapee_dies_on_delete(make_agent: AgentFactory, tmp_path: Path) -> None:
    pid_file = tmp_path / "escapee.pid"
    pids: list[int] = []
    try:
        async with make_agent() as agent:
            await create(agent.url, "del.0", f"{ESCAPEE.format(pid_file=pid_file)} & wait")
            pids = await wait_escapee(pid_file)
            async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
                assert (await client.post("/delete-process/esc.del.0", content="{}")).status_code == 200
            await wait_dead(pids, timeout_s=5)
    finally:
        kill_all(pids)


async def test_the_escapee_dies_when_its_main_process_exits(tmp_path: Path) -> None:
    """Started by a subshell that exits at once: an orphan before any walk can see it.

    The agent adopts it (child subreaper); its main process waits until it runs, then
    exits, and the unit's end takes it along.
    """
    pid_file = tmp_path / "escapee.pid"
    agent = AgentProcess(tmp_path / "data").start()
    pids: list[int] = []
    try:
        command = f"({ESCAPEE.format(pid_file=pid_file)} &); until [ -s {pid_file} ]; do sleep 0.01; done"
        async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
            body = {"app": "esc", "node": "exit.0", "restart": "never", "command": ["/bin/sh", "-c", command]}
            assert (await client.post("/create-process", json=body)).status_code == 201
            await poll(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
            pids = [int(pid_file.read_text())]
            await wait_http(client, "/process-status/esc.exit.0", lambda d: d["state"] == "exited")
            await wait_dead(pids, timeout_s=5)
    finally:
        agent.kill()
        kill_all(pids)


async def test_the_escapee_dies_on_session_close(tmp_path: Path) -> None:
    pid_file = tmp_path / "escapee.pid"
    # The shell product's close waits out close_grace_s for a program whose main process
    # forked away (as setsid does); a short one keeps the test short.
    config = tmp_path / "agent.toml"
    config.write_text("[sessions]\nclose_grace_s = 1.0\n")
    agent = AgentProcess(tmp_path / "data", "--config", str(config)).start()
    pids: list[int] = []
    try:
        async with Client(agent.url) as client:
            session = await client.open_session("shell")
            await session.proc.launch(["/bin/sh", "-c", ESCAPEE.format(pid_file=pid_file)])
            pids = await wait_escapee(pid_file)
            await session.close()
        await wait_dead(pids, timeout_s=5)
    finally:
        agent.kill()
        kill_all(pids)


async def test_the_escapee_dies_with_a_sigkilled_agent(tmp_path: Path) -> None:
    pid_file = tmp_path / "escapee.pid"
    agent = AgentProcess(tmp_path / "data").start()
    pids: list[int] = []
    try:
        await create(agent.url, "kill.0", f"{ESCAPEE.format(pid_file=pid_file)} & wait")
        pids = await wait_escapee(pid_file)
        agent.signal(signal.SIGKILL)
        agent.wait()
        await wait_dead(pids, timeout_s=5)
    finally:
        agent.kill()
        kill_all(pids)


async def test_the_next_agent_kills_an_escapee_its_predecessor_and_keeper_left(tmp_path: Path) -> None:
    """Agent frozen, its keeper killed, then the agent: only the next start is left to act."""
    pid_file = tmp_path / "escapee.pid"
    first = AgentProcess(tmp_path / "data").start()
    pids: list[int] = []
    try:
        await create(first.url, "next.0", f"{ESCAPEE.format(pid_file=pid_file)} & wait")
        pids = await wait_escapee(pid_file)
        first.signal(signal.SIGSTOP)  # it must not start a new keeper
        for pid in keepers_of(first.pid):
            os.kill(pid, signal.SIGKILL)
        first.signal(signal.SIGKILL)
        first.wait()
        assert all(pid_alive(p) for p in pids)  # nothing left to kill them
        second = AgentProcess(tmp_path / "data", "--no-restore").start()
        try:
            await wait_dead(pids, timeout_s=5)
        finally:
            second.kill()
    finally:
        first.kill()
        kill_all(pids)


async def test_herder_up_adopts_the_escapee_too(tmp_path: Path) -> None:
    """``herder up`` (what ``make up`` runs) embeds its agent: it must be a subreaper as well,
    or an orphan whose parent exits before any walk goes to init unseen."""
    pid_file = tmp_path / "escapee.pid"
    up = UpProcess(tmp_path / "data").start()
    pids: list[int] = []
    try:
        agent_url = up.agent_url
        command = f"({ESCAPEE.format(pid_file=pid_file)} &); until [ -s {pid_file} ]; do sleep 0.01; done"
        async with httpx.AsyncClient(base_url=agent_url, timeout=30) as client:
            body = {"app": "esc", "node": "up.0", "restart": "never", "command": ["/bin/sh", "-c", command]}
            assert (await client.post("/create-process", json=body)).status_code == 201
            await poll(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
            pids = [int(pid_file.read_text())]
            await wait_http(client, "/process-status/esc.up.0", lambda d: d["state"] == "exited")
            await wait_dead(pids, timeout_s=5)
    finally:
        up.stop()
        kill_all(pids)
