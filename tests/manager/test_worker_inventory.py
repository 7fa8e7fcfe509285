"""``GET /workers/{id}/inventory``: a linked agent's processes, pools and sessions, asked over its link.

A real manager (both databases) and a real agent linked to it, running a real process, a
real pool and a real session: the manager's answer lists them. Then the refusals: an
unknown worker (404), one not linked here (409), a user's key (403); and, with a test
playing the agent on a real link, an answer that does not fit the contract (502), none
in time (504), and a link that ends during the call (503).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from herder.auth import init_keys
from herder.client import Agent as Client
from herder.fleet import RegisterAnswer, read_answer
from herder.manager import inventory
from herder.manager.server import Manager
from herder.rpc import Peer, connect
from tests.conftest import AgentFactory
from tests.helpers import wait_http
from tests.manager.conftest import ManagerFactory
from tests.openapi_contract import conforms, served_document
from tests.regress.test_one_users_flood_starves_no_one import tokens
from tests.test_sessions import session_config

WAIT_S = 20.0
VALID = {
    "collected_at": 1.0,
    "processes": [{"slug": "web.0", "state": "running", "restarts": 0}],
    "processes_total": 1,
    "pools": [],
    "pools_total": 0,
    "sessions": [],
    "sessions_total": 0,
}


async def test_a_linked_agents_processes_pools_and_sessions_are_listed(
    make_manager: ManagerFactory, make_agent: AgentFactory
) -> None:
    async with make_manager(heartbeat_interval_s=0.3) as manager:
        link = {"url": manager.url, "slots": 1, "name": "inventoried"}
        async with (
            make_agent(manager=link, **session_config()) as agent,
            httpx.AsyncClient(base_url=agent.url, timeout=30) as api,
            httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        ):
            assert agent.runtime is not None
            assert agent.runtime.worker is not None
            await asyncio.wait_for(agent.runtime.worker.connected.wait(), WAIT_S)
            worker_id, agent_url = agent.runtime.worker.worker_id, agent.url
            process = {"app": "ticker", "node": "0", "command": ["sleep", "60"], "env": {"SECRET": "s3cr3t"}}
            assert (await api.post("/create-process", json=process)).status_code == 201
            await wait_http(api, "/process-status/ticker.0", lambda d: d["state"] == "running")
            pool = {
                "name": "site",
                "command": "python3 -m http.server {port} --bind 127.0.0.1",
                "min_instances": 1,
            }
            assert (await api.post("/pools", json=pool)).status_code == 201
            await wait_http(api, "/pools/site", lambda d: len(d["instances"]) == 1)
            async with Client(agent.url) as sessions:
                session = await sessions.open_session("testkit")
                answer = await client.get(f"/workers/{worker_id}/inventory")
                assert answer.status_code == 200, answer.text
                conforms(await served_document(client), answer)
                doc = answer.json()
                await session.close()
    assert (doc["worker_id"], doc["hostname"], doc["agent_url"]) == (worker_id, "inventoried", agent_url)
    ticker = next(p for p in doc["processes"] if p["slug"] == "ticker.0")
    assert ticker["state"] == "running"
    assert ticker["command"] == ["sleep", "60"]
    assert ticker["pid"] > 0
    assert {"restarts", "uptime_s", "port", "cpu_percent", "rss_bytes", "app"} <= ticker.keys()
    assert doc["processes_total"] == len(doc["processes"])
    assert "s3cr3t" not in answer.text  # a process's environment stays on the agent
    assert [(p["name"], p["instances"], p["in_flight"], p["cold_starts"]) for p in doc["pools"]] == [
        ("site", 1, 0, 0)
    ]
    assert [(s["id"], s["product"], s["attached"]) for s in doc["sessions"]] == [
        (session.id, "testkit", True)
    ]


async def test_an_unknown_worker_is_404_and_one_not_linked_here_is_409(make_manager: ManagerFactory) -> None:
    async with make_manager() as manager, httpx.AsyncClient(base_url=manager.url, timeout=30) as client:
        missing = await client.get("/workers/999/inventory")
        assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
        bad = await client.get("/workers/x/inventory")
        assert (bad.status_code, bad.json()["field"]) == (422, "id")
        # A worker that pulls its work over HTTP has no link to ask.
        registered = await client.post("/workers", json={"hostname": "puller"})
        (puller,) = registered.json().values()
        refused = await client.get(f"/workers/{puller['id']}/inventory")
        assert refused.status_code == 409
        assert refused.json()["error"] == "not_linked"
        assert "not linked to this manager" in refused.json()["message"]
        document = await served_document(client)
        for answer in (missing, bad, refused):
            conforms(document, answer)


def rpc_url(manager: Manager) -> str:
    return "ws" + manager.url[4:] + "/rpc"


@contextlib.asynccontextmanager
async def playing_agent(
    manager: Manager, answer: Callable[[Peer], Any] | None, token: str | None = None
) -> AsyncIterator[int]:
    """A link registered as a worker whose ``inventory`` answers ``answer(peer)`` (None: an
    agent older than the method); its id."""

    async def inventory_asked(peer: Peer) -> Any:
        assert answer is not None
        return await answer(peer)

    handlers: dict[str, Any] = {"assign": lambda item: None, "stop": lambda item_id, attempt: None}
    if answer is not None:
        handlers["inventory"] = inventory_asked
    async with connect(rpc_url(manager), token=token, handlers=handlers) as peer:
        registered = await peer.call("register", {"hostname": "played", "slots": 1})
        yield read_answer(RegisterAnswer, registered).worker_id


async def test_answers_that_do_not_fit_are_502_and_none_in_time_is_504(
    make_manager: ManagerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: asyncio.Queue[Any] = asyncio.Queue()
    never = asyncio.Event()

    async def answer(peer: Peer) -> Any:
        given = answers.get_nowait()
        if given == "hang":
            await never.wait()  # cancelled by the manager's timeout
        if given == "close":
            await peer.close("the agent goes away")
            await never.wait()
        return given

    monkeypatch.setattr(inventory, "INVENTORY_TIMEOUT_S", 0.5)
    async with (
        make_manager() as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        playing_agent(manager, answer) as worker_id,
    ):
        path = f"/workers/{worker_id}/inventory"
        answers.put_nowait(VALID)
        fitting = await client.get(path)
        assert fitting.status_code == 200
        assert fitting.json()["processes"] == [{"slug": "web.0", "state": "running", "restarts": 0}]
        for bad, named in (
            ({**VALID, "processes": "none"}, "processes"),
            ({**VALID, "processes": [{"slug": "x" * 300, "state": "running"}]}, "processes.0.slug"),
            ({**VALID, "pools": [{"name": "p", "state": "ready", "cold_starts": -1}]}, "pools.0.cold_starts"),
            ({k: v for k, v in VALID.items() if k != "sessions_total"}, "sessions_total"),
            ([1, 2], "(the answer)"),
        ):
            answers.put_nowait(bad)
            refused = await client.get(path)
            assert refused.status_code == 502, bad
            assert refused.json()["error"] == "bad_answer"
            assert named in refused.json()["message"]
        answers.put_nowait("hang")
        late = await client.get(path)
        assert (late.status_code, late.json()["error"]) == (504, "timeout")
        answers.put_nowait("close")
        gone = await client.get(path)
        assert gone.status_code in (503, 409), gone.text  # the link ended during the call (or just before)


async def test_an_agent_older_than_the_inventory_is_a_502_that_says_so(make_manager: ManagerFactory) -> None:
    async with (
        make_manager() as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        playing_agent(manager, None) as worker_id,
    ):
        refused = await client.get(f"/workers/{worker_id}/inventory")
        assert (refused.status_code, refused.json()["error"]) == (502, "bad_answer")
        assert "unknown_method" in refused.json()["message"]
        assert "older" in refused.json()["message"]


async def test_a_users_key_may_not_see_an_agents_processes(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")

    async def answer(_: Peer) -> Any:
        return VALID

    async with (
        make_manager() as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
    ):
        token = await tokens(manager, client, ("alice", "user"), ("root", "admin"))
        async with playing_agent(manager, answer, token["root"]) as worker_id:
            path = f"/workers/{worker_id}/inventory"
            refused = await client.get(path, headers={"Authorization": f"Bearer {token['alice']}"})
            assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
            seen = await client.get(path, headers={"Authorization": f"Bearer {token['root']}"})
            assert seen.status_code == 200
            assert seen.json()["hostname"] == "played"
