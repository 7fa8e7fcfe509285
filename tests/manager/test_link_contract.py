"""Every refusal of the agents' link, over a real connection to a real manager (both databases).

A test plays the agent with ``rpc.connect`` (``handlers`` take the pushed work): each
refused report comes back with its stable code (``fleet.RefusalCode``), which is what a
real agent matches; and a real ``Agent`` drops a report refused for good and tries a
transiently refused one again until it applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from herder.auth import init_keys
from herder.fleet import (
    MAX_OUTPUT_LINES,
    HeartbeatAnswer,
    RefusalCode,
    RegisterAnswer,
    read_answer,
    refusal_of,
)
from herder.manager import errors
from herder.manager.server import Manager
from herder.rpc import HandshakeRefused, Peer, RemoteError, connect
from tests.conftest import AgentFactory
from tests.manager.conftest import ManagerFactory
from tests.manager.test_link import wait_task
from tests.regress.test_one_users_flood_starves_no_one import tokens

WAIT_S = 20.0
SLEEPER = {"type": "command", "settings": {"argv": ["sleep", "60"]}, "max_attempts": 1}


def rpc_url(manager: Manager) -> str:
    return "ws" + manager.url[4:] + "/rpc"


@dataclass
class Linked:
    """A connection playing a registered agent, and the work pushed to it."""

    peer: Peer
    worker_id: int
    pushed: asyncio.Queue[dict[str, Any]]

    async def next_item(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.pushed.get(), WAIT_S)


async def refused(call: Any) -> tuple[RefusalCode | None, RemoteError]:
    """The contract's code of a call that must fail, and the error itself."""
    with pytest.raises(RemoteError) as caught:
        await call
    return refusal_of(caught.value), caught.value


@pytest.fixture
async def manager_and_client(
    make_manager: ManagerFactory,
) -> AsyncIterator[tuple[Manager, httpx.AsyncClient]]:
    async with (
        make_manager(heartbeat_interval_s=5) as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
    ):
        yield manager, client


@contextlib.asynccontextmanager
async def link(manager: Manager, hostname: str, token: str | None = None) -> AsyncIterator[Linked]:
    """A connection registered as the worker ``hostname``."""
    pushed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    handlers = {"assign": pushed.put_nowait, "stop": lambda item_id, attempt: None}
    async with connect(rpc_url(manager), token=token, handlers=handlers) as peer:
        answer = read_answer(RegisterAnswer, await peer.call("register", {"hostname": hostname, "slots": 1}))
        yield Linked(peer, answer.worker_id, pushed)


@pytest.fixture
async def agent_link(manager_and_client: tuple[Manager, httpx.AsyncClient]) -> AsyncIterator[Linked]:
    manager, _ = manager_and_client
    async with link(manager, "contract") as linked:
        yield linked


def test_the_managers_codes_are_the_contracts() -> None:
    """The manager raises these; the agent matches the contract's values."""
    assert errors.FencedOut.code == RefusalCode.FENCED_OUT
    assert errors.NotFound.code == RefusalCode.NOT_FOUND
    assert {c for c in RefusalCode if c.final} == {
        RefusalCode.FENCED_OUT,
        RefusalCode.NOT_FOUND,
        RefusalCode.INVALID_PARAMS,
    }


async def test_the_answers_fit_the_contract(agent_link: Linked) -> None:
    answer = await agent_link.peer.call("heartbeat", agent_link.worker_id, {}, [])
    assert read_answer(HeartbeatAnswer, answer) == HeartbeatAnswer(stop=[])
    assert answer == {"stop": []}  # no keys: no "revoked"


async def test_a_report_for_an_attempt_fenced_out_is_refused_for_good(
    manager_and_client: tuple[Manager, httpx.AsyncClient], agent_link: Linked
) -> None:
    _, client = manager_and_client
    task = (await client.post("/tasks", json=SLEEPER)).json()
    item = await agent_link.next_item()
    peer, me = agent_link.peer, agent_link.worker_id
    await peer.call("started", me, item["id"], item["attempt"])
    for report in (
        peer.call("started", me, item["id"], item["attempt"] + 1),  # an attempt it never got
        peer.call("finished", me, item["id"], item["attempt"] + 1, 0),
    ):
        code, error = await refused(report)
        assert code is RefusalCode.FENCED_OUT
        assert code.final
        assert error.code == "application_error"
        assert f"work item {item['id']}" in error.message
    # Canceled: the attempt it holds is no longer its own either.
    assert (await client.patch(f"/tasks/{task['id']}", json={"status": "canceled"})).status_code == 204
    code, _ = await refused(peer.call("finished", me, item["id"], item["attempt"], -15, "stopped"))
    assert code is RefusalCode.FENCED_OUT


async def test_a_report_for_an_unknown_work_item_is_refused_for_good(agent_link: Linked) -> None:
    peer, me = agent_link.peer, agent_link.worker_id
    for report in (
        peer.call("started", me, 10**9, 1),
        peer.call("finished", me, 10**9, 1, 0, None, time.time()),
    ):
        code, _ = await refused(report)
        assert code is not None
        assert code.final
        assert code in (RefusalCode.FENCED_OUT, RefusalCode.NOT_FOUND)


@pytest.mark.parametrize(
    ("method", "args", "field"),
    [
        ("heartbeat", ["{me}", {}, [[1]]], "running.0.1"),
        ("heartbeat", ["{me}", {}, [[1, 1]] * 5000], "running"),
        ("heartbeat", ["{me}", [], []], "figures"),
        ("started", ["{me}", "seven", 1], "item_id"),
        ("started", ["{me}", 7, 0], "attempt"),
        ("finished", ["{me}", 7, 1], "exit_code"),
        ("finished", ["{me}", 7, 1, 0, "x" * 20_000], "error"),
        ("finished", ["{me}", 7, 1, 0, None, None, "more"], None),
        ("output", ["{me}", 7, 1, [["stdout", "a", "b"]]], "lines.0"),
        ("output", ["{me}", 7, 1, [["herder", "a"]]], "lines.0.0"),
        ("output", ["{me}", 7, 1, [["stdout", "a"]] * (MAX_OUTPUT_LINES + 1)], "lines"),
        ("output", ["{me}", 7, 1, [["stdout", "x" * (64 * 1024 + 1)]]], "lines.0.1"),
        ("register", [{"hostname": "a b"}], "info.hostname"),
        ("register", [{"hostname": "h", "slots": 0}], "info.slots"),
        ("register", [{"hostname": "h", "tags": ["t"] * 65}], "info.tags"),
        ("register", [{"hostname": "h", "colour": "red"}], "info.colour"),
    ],
)
async def test_malformed_arguments_are_invalid_params_naming_the_field(
    agent_link: Linked, method: str, args: list[Any], field: str | None
) -> None:
    real = [agent_link.worker_id if a == "{me}" else a for a in args]
    code, error = await refused(agent_link.peer.call(method, *real))
    assert code is RefusalCode.INVALID_PARAMS
    assert code.final
    assert error.data == ({"field": field} if field is not None else None)
    if field is not None:
        assert field in error.message


async def test_a_report_for_another_worker_or_before_registering_is_refused(
    manager_and_client: tuple[Manager, httpx.AsyncClient], agent_link: Linked
) -> None:
    manager, _ = manager_and_client
    async with link(manager, "other") as other:
        for call in (
            agent_link.peer.call("heartbeat", other.worker_id, {}, []),
            agent_link.peer.call("started", other.worker_id, 7, 1),
            agent_link.peer.call("finished", other.worker_id, 7, 1, 0),
        ):
            code, error = await refused(call)
            assert code is RefusalCode.WRONG_WORKER
            assert not code.final
            assert f"worker {other.worker_id}" in error.message
    async with connect(rpc_url(manager)) as unregistered:
        code, _ = await refused(unregistered.call("heartbeat", agent_link.worker_id, {}, []))
        assert code is RefusalCode.WRONG_WORKER


async def test_without_credentials_the_link_is_refused(make_manager: ManagerFactory) -> None:
    """No token, or a wrong one: the connection is refused before any method is reached
    (by the front door, or by the handshake); the agent tries again later."""
    secret = "s3cret-" * 6
    async with make_manager(auth_token=secret) as manager:
        for token in (None, "not-" + secret):
            with pytest.raises(HandshakeRefused) as refused:
                async with connect(rpc_url(manager), token=token) as anonymous:
                    await anonymous.call("register", {"hostname": "h"})
            assert refused.value.code in ("401", "403", RefusalCode.UNAUTHORIZED)
        async with link(manager, "trusted", token=secret) as linked:
            assert linked.worker_id >= 1


async def test_only_an_admins_key_links_a_worker(make_manager: ManagerFactory, tmp_path: Path) -> None:
    init_keys(tmp_path / "manager")
    async with make_manager() as manager, httpx.AsyncClient(base_url=manager.url, timeout=30) as client:
        token = await tokens(manager, client, ("alice", "user"), ("root", "admin"))
        async with connect(rpc_url(manager), token=token["alice"]) as alice:
            code, error = await refused(alice.call("register", {"hostname": "alices"}))
            assert code is RefusalCode.FORBIDDEN
            assert not code.final
            assert "admin" in error.message
        async with link(manager, "roots", token=token["root"]) as linked:
            answer = await linked.peer.call("heartbeat", linked.worker_id, {}, [])
            assert isinstance(read_answer(HeartbeatAnswer, answer).revoked, list)


# -- a real agent -----------------------------------------------------------------------------


class Refusals(logging.Handler):
    """The agent's log lines about refused reports, as they come."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.final: asyncio.Queue[str] = asyncio.Queue()
        self.transient: asyncio.Queue[str] = asyncio.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("the manager refused "):
            self.final.put_nowait(message)
        elif message.startswith("the manager failed "):
            self.transient.put_nowait(message)


@pytest.fixture
def refusals() -> Iterator[Refusals]:
    handler = Refusals()
    logger = logging.getLogger("herder.agent.link.worker")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_an_agent_drops_a_final_refusal_and_retries_a_transient_one(
    make_manager: ManagerFactory, make_agent: AgentFactory, refusals: Refusals
) -> None:
    # Heartbeats a minute apart: after the one that follows the registration, none falls
    # in the moment the agent speaks for a wrong worker (it would break the link).
    async with make_manager(heartbeat_interval_s=60) as manager:
        settings = {"url": manager.url, "slots": 2, "name": "real-agent"}
        async with make_agent(manager=settings) as agent, httpx.AsyncClient(base_url=manager.url) as client:
            assert agent.runtime is not None
            worker = agent.runtime.worker
            assert worker is not None
            await asyncio.wait_for(worker.connected.wait(), WAIT_S)
            # Final: the task is canceled, so the attempt's finished report is fenced out.
            task = (await client.post("/tasks", json=SLEEPER)).json()
            await wait_task(client, task["id"], "rendering")
            assert (
                await client.patch(f"/tasks/{task['id']}", json={"status": "canceled"})
            ).status_code == 204
            dropped = await asyncio.wait_for(refusals.final.get(), WAIT_S)
            assert dropped.startswith("the manager refused finished")
            assert "[fenced]" in dropped
            assert worker.pending_reports() == 0  # dropped, not kept for later
            assert refusals.transient.empty()  # and never tried again
            # Transient: the manager does not know the link as the worker its report names
            # (wrong_worker); the agent tries again, and the report applies once it does.
            body = {"type": "command", "settings": {"shell": "sleep 1"}, "max_attempts": 1}
            task = (await client.post("/tasks", json=body)).json()
            await wait_task(client, task["id"], "rendering")
            real_id = worker.worker_id
            assert real_id is not None
            worker.worker_id = real_id + 1000
            try:
                retried = await asyncio.wait_for(refusals.transient.get(), WAIT_S)
            finally:
                worker.worker_id = real_id
            assert retried.startswith("the manager failed finished")
            assert "[wrong_worker]" in retried
            done = await wait_task(client, task["id"], "completed")
            assert done["work_items"][0]["exit_code"] == 0


async def test_an_agent_ignores_work_pushed_outside_the_contract(
    make_manager: ManagerFactory, make_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """``assign`` and ``stop`` that do not validate never reach the agent's handlers; the
    link stays up and the next valid assignment runs."""
    async with make_manager(heartbeat_interval_s=60) as manager:
        settings = {"url": manager.url, "slots": 1, "name": "strict-agent"}
        async with make_agent(manager=settings) as agent, httpx.AsyncClient(base_url=manager.url) as client:
            assert agent.runtime is not None
            worker = agent.runtime.worker
            assert worker is not None
            await asyncio.wait_for(worker.connected.wait(), WAIT_S)
            assert manager.runtime is not None
            assert worker.worker_id is not None
            link_to_agent = manager.runtime.agents.linked.get(worker.worker_id)
            assert link_to_agent is not None
            with caplog.at_level(logging.WARNING, logger="herder.rpc.peer"):
                bad = {"id": 10**6, "task_id": 1, "attempt": 1, "argv": ["sh", "-c", "exit 9"], "secret": 1}
                await link_to_agent.notify("assign", {**bad, "argv": []})  # nothing to run
                await link_to_agent.notify("assign", {**bad, "attempt": 0})
                await link_to_agent.notify("stop", "all", 1)
                # Pushed after the refused ones on the same link: once it ran, they were read.
                task = (
                    await client.post("/tasks", json={"type": "command", "settings": {"argv": ["true"]}})
                ).json()
                await wait_task(client, task["id"], "completed")
            dropped = [r.getMessage() for r in caplog.records if "invalid arguments" in r.getMessage()]
            assert len(dropped) == 3, dropped
            assert "item.argv" in dropped[0]
            assert "item.attempt" in dropped[1]
            assert "item_id" in dropped[2]
            assert worker.connected.is_set()
