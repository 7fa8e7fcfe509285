"""Supervision: restart policies, backoff, stop with grace and kill, nothing left behind."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from herder.agent import Agent
from tests.conftest import AgentFactory
from tests.helpers import keepers_of, pid_alive, poll, wait_dead, wait_unit

FIXTURES = Path(__file__).parent / "fixtures"


async def create(client: httpx.AsyncClient, node: str, command: list[str] | str, **extra: object) -> dict:
    body = {"app": "sup", "node": node, "command": command, **extra}
    response = await client.post("/create-process", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def notes(agent: Agent, slug: str) -> list[str]:
    unit = agent.supervisor.units[slug]
    return [line.decode() for stream, line in unit.output.ring if stream == "herder"]


async def test_always_restarts_with_growing_backoff(agent: Agent, client: httpx.AsyncClient) -> None:
    await create(client, "crashy.0", ["/bin/sh", "-c", "exit 3"])
    unit = agent.supervisor.units["sup.crashy.0"]
    await wait_unit(unit, lambda u: u.restarts >= 4)
    assert unit.exit_code == 3
    delays = [float(n.split("restarting in ")[1].split(" s")[0]) for n in notes(agent, unit.slug)]
    # 0.05, 0.1, 0.2, 0.4 with the test config: each quick failure doubles the delay.
    assert delays[:4] == sorted(delays[:4])
    assert delays[0] < delays[3]
    assert all(d <= agent.config.supervision.backoff_max_s for d in delays)


async def test_stable_run_restarts_immediately(agent: Agent, client: httpx.AsyncClient) -> None:
    stable = agent.config.supervision.stable_s
    await create(client, "stable.0", [sys.executable, "-c", f"import time; time.sleep({stable + 0.1})"])
    unit = agent.supervisor.units["sup.stable.0"]
    await wait_unit(unit, lambda u: u.restarts >= 1)
    assert "restarting in 0.0 s" in notes(agent, unit.slug)[0]


async def test_on_failure_and_never_policies(agent: Agent, client: httpx.AsyncClient) -> None:
    await create(client, "ok.0", ["true"], restart="on-failure")
    await create(client, "bad.0", ["/bin/sh", "-c", "exit 7"], restart="on-failure")
    await create(client, "never.0", ["/bin/sh", "-c", "exit 5"], restart="never")
    units = agent.supervisor.units
    await wait_unit(units["sup.ok.0"], lambda u: u.state == "exited")
    await wait_unit(units["sup.never.0"], lambda u: u.state == "exited")
    await wait_unit(units["sup.bad.0"], lambda u: u.restarts >= 2)
    assert units["sup.ok.0"].exit_code == 0
    assert units["sup.ok.0"].restarts == 0
    assert units["sup.never.0"].exit_code == 5
    status = (await client.get("/process-status/sup.never.0")).json()
    assert status["state"] == "exited"
    assert status["exit_code"] == 5
    assert status["pid"] is None


async def test_unstartable_command_fails_clearly(agent: Agent, client: httpx.AsyncClient) -> None:
    await create(client, "missing.0", ["/no/such/program"])
    unit = agent.supervisor.units["sup.missing.0"]
    await wait_unit(unit, lambda u: u.state == "failed")
    assert unit.error is not None
    assert "/no/such/program" in unit.error


async def test_env_reaches_the_child(agent: Agent, client: httpx.AsyncClient) -> None:
    await create(
        client,
        "env.0",
        ["/bin/sh", "-c", 'echo "$GREETING $HERDER_SLUG $HERDER_APP $HERDER_NODE $PORT"; exec sleep 100'],
        env={"GREETING": "hello"},
    )
    unit = agent.supervisor.units["sup.env.0"]
    await wait_unit(unit, lambda u: u.output.lines_total >= 1)
    words = unit.output.ring[0][1].decode().split()
    assert words[:4] == ["hello", "sup.env.0", "sup", "env.0"]
    assert int(words[4]) == unit.port


async def test_only_the_agent_marks_leased_work(agent: Agent, client: httpx.AsyncClient) -> None:
    """HERDER_LEASED puts a process in the watchdog's reach: a user cannot set it."""
    await create(
        client,
        "lease.0",
        ["/bin/sh", "-c", 'echo "leased=${HERDER_LEASED:-no}"; exec sleep 100'],
        env={"HERDER_LEASED": agent.supervisor.agent_id},
    )
    unit = agent.supervisor.units["sup.lease.0"]
    await wait_unit(unit, lambda u: u.output.lines_total >= 1)
    assert unit.output.ring[0][1].decode() == "leased=no"


async def test_delete_waits_out_the_grace_then_kills(make_agent: AgentFactory) -> None:
    async with (
        make_agent(supervision={"grace_s": 0.5}) as agent,
        httpx.AsyncClient(base_url=agent.url) as client,
    ):
        await create(client, "stubborn.0", [sys.executable, str(FIXTURES / "ignore_sigterm.py")])
        unit = agent.supervisor.units["sup.stubborn.0"]
        await wait_unit(unit, lambda u: u.output.lines_total >= 1)  # its handler is installed
        pid = unit.pid
        assert pid is not None
        started = time.monotonic()
        response = await client.post(f"/delete-process/{unit.slug}", content="{}")
        took = time.monotonic() - started
        assert response.status_code == 200
        assert response.json()["exit_code"] == -9
        assert not pid_alive(pid)
        assert 0.5 <= took < 5


async def test_delete_is_quick_for_a_polite_process(agent: Agent, client: httpx.AsyncClient) -> None:
    await create(client, "polite.0", ["sleep", "100"])
    unit = agent.supervisor.units["sup.polite.0"]
    await wait_unit(unit, lambda u: u.pid is not None)
    started = time.monotonic()
    response = await client.post(f"/delete-process/{unit.slug}", content="{}")
    assert response.status_code == 200
    assert response.json()["exit_code"] == -15
    assert time.monotonic() - started < agent.config.supervision.grace_s


async def test_delete_leaves_no_descendant(agent: Agent, client: httpx.AsyncClient, tmp_path: Path) -> None:
    """A grandchild in the group and a great-grandchild that escaped it both die."""
    pids_file = tmp_path / "pids"
    await create(client, "tree.0", [sys.executable, str(FIXTURES / "tree.py"), str(pids_file)])
    await poll(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 3)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert all(pid_alive(p) for p in pids)
    assert (await client.post("/delete-process/sup.tree.0", content="{}")).status_code == 200
    await wait_dead(pids, timeout_s=5)


@pytest.mark.parametrize(
    "leave",
    [
        "sleep 100 &",  # in the process's group: the group kill reaches it
        # In a session of its own, out of the group's reach, left by a main process that
        # lives milliseconds: the sweep that looks only at pids handed out since finds it.
        "setsid sleep 100 &",
    ],
    ids=["in-its-group", "escaped"],
)
async def test_leftovers_are_killed_when_the_main_process_exits(
    agent: Agent, client: httpx.AsyncClient, tmp_path: Path, leave: str
) -> None:
    pid_file = tmp_path / "left.pid"
    # The main process leaves a background sleeper behind and exits 0.
    await create(
        client,
        "leaky.0",
        ["/bin/sh", "-c", f"{leave} echo $! > {pid_file}; exit 0"],
        restart="never",
    )
    unit = agent.supervisor.units["sup.leaky.0"]
    await wait_unit(unit, lambda u: u.state == "exited")
    await wait_dead([int(pid_file.read_text())], timeout_s=5)


async def test_many_processes_are_independent(agent: Agent, client: httpx.AsyncClient) -> None:
    for i in range(5):
        await create(client, f"many.{i}", ["sleep", "100"])
    await create(client, "dies.0", ["/bin/sh", "-c", "exit 1"], restart="never")
    await wait_unit(agent.supervisor.units["sup.dies.0"], lambda u: u.state == "exited")
    for i in range(5):
        unit = agent.supervisor.units[f"sup.many.{i}"]
        await wait_unit(unit, lambda u: u.state == "running")
        assert unit.pid is not None
        assert pid_alive(unit.pid)


async def test_a_start_that_fails_takes_its_keeper_back(make_agent: AgentFactory) -> None:
    """The keeper starts early; a start refused later (a port in use) must not leave it."""
    import os
    import socket

    from herder.agent.errors import ConfigError

    def keepers() -> list[int]:
        return keepers_of(os.getpid())

    before = set(keepers())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="cannot listen"):
            async with make_agent(protocol_port=taken.getsockname()[1]):
                pass
    assert set(keepers()) <= before
