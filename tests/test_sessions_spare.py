"""The spare host (issue 19): a session's host started ahead, handed to one session only.

The product ``testkit`` lives in ``tests/fixtures/product_pkg`` (see test_sessions.py).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from herder.agent import Agent
from herder.agent.sessions.manager import SessionManager
from herder.client import Agent as Client
from tests.conftest import AgentFactory
from tests.helpers import pid_alive, poll, wait_dead
from tests.test_sessions import session_config


def manager(agent: Agent) -> SessionManager:
    assert agent.runtime is not None
    assert agent.runtime.sessions is not None
    return agent.runtime.sessions


async def ready_spare(agent: Agent, product: str) -> tuple[str, str, int]:
    """The spare once its host has started and described itself."""
    await poll(lambda: (manager(agent).spare or ("",))[0] == product, timeout_s=30)
    spare = manager(agent).spare
    assert spare is not None
    return spare


async def whoami(session: Any) -> dict[str, Any]:
    seen: dict[str, Any] = await session.ext("echo").whoami()
    return seen


async def test_a_spare_host_serves_one_session_and_is_replaced(make_agent: AgentFactory) -> None:
    async with make_agent(**session_config()) as agent, Client(agent.url) as client:
        assert manager(agent).spare is None  # none before a product was opened
        first = await client.open_session("testkit")
        first_pid = (await whoami(first))["pid"]
        _, spare_id, spare_pid = await ready_spare(agent, "testkit")
        assert spare_pid != first_pid
        assert not (await client.sessions())[1:]  # a spare is not a session

        second = await client.open_session("testkit")
        assert second.id == spare_id
        seen = await whoami(second)
        assert seen["pid"] == spare_pid  # the spare's host serves it ...
        # ... as the session's own: its directory, its id, its marker.
        assert Path(seen["cwd"]) == agent.config.data_dir.resolve() / "sessions" / second.id
        assert (await second.ext("echo").say("x"))["session"] == second.id
        assert seen["pgid"] == seen["pid"] == seen["sid"]
        assert seen["env"] == (await whoami(first))["env"]  # the same variables as a host started at open

        # Taken once: the next spare is a new process, and the third session gets it.
        _, next_id, next_pid = await ready_spare(agent, "testkit")
        assert next_id not in (first.id, second.id)
        assert next_pid not in (first_pid, spare_pid)
        third = await client.open_session("testkit")
        assert (await whoami(third))["pid"] == next_pid
        pids = {first_pid, spare_pid, next_pid}
        assert len(pids) == 3

        # Closing one session ends its host only; the others still answer.
        await second.close()
        await wait_dead([spare_pid])
        assert (await whoami(first))["pid"] == first_pid
        assert (await whoami(third))["pid"] == next_pid
        for s in (first, third):
            await s.close()


async def test_the_spare_dies_with_the_agent_and_leaves_no_directory(make_agent: AgentFactory) -> None:
    async with make_agent(**session_config()) as agent, Client(agent.url) as client:
        async with client.session("testkit"):
            pass
        _, spare_id, spare_pid = await ready_spare(agent, "testkit")
        root = agent.config.data_dir / "sessions" / spare_id
        assert root.is_dir()
    await wait_dead([spare_pid])
    assert not root.exists()
    assert not (agent.config.data_dir / "sessions" / f"{spare_id}.log").exists()


async def test_the_spare_follows_the_product_last_opened(make_agent: AgentFactory) -> None:
    async with make_agent(**session_config()) as agent, Client(agent.url) as client:
        async with client.session("testkit"):
            pass
        _, testkit_id, testkit_pid = await ready_spare(agent, "testkit")
        async with client.session("shell") as s:
            assert s.id != testkit_id  # a spare of another product is not handed out
        await wait_dead([testkit_pid])
        _, _, shell_pid = await ready_spare(agent, "shell")
        assert not (agent.config.data_dir / "sessions" / testkit_id).exists()
        assert pid_alive(shell_pid)


async def test_a_dead_spare_is_not_handed_out(make_agent: AgentFactory) -> None:
    async with make_agent(**session_config()) as agent, Client(agent.url) as client:
        async with client.session("testkit"):
            pass
        _, spare_id, spare_pid = await ready_spare(agent, "testkit")
        os.kill(spare_pid, signal.SIGKILL)
        await wait_dead([spare_pid])
        async with client.session("testkit") as s:
            assert s.id != spare_id
            assert (await whoami(s))["pid"] != spare_pid


async def test_no_spare_when_switched_off(make_agent: AgentFactory) -> None:
    async with make_agent(**session_config(spare_host=False)) as agent, Client(agent.url) as client:
        async with client.session("testkit"):
            pass
        async with client.session("testkit"):
            pass
        assert manager(agent).spare is None
        assert manager(agent)._spare is None
