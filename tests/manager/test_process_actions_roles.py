"""On an agent working for a manager with keys, who may stop, start and restart a process:
whoever may delete it (its owner, or an admin); to another user it does not exist."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from herder.auth import init_keys
from tests.conftest import AgentFactory
from tests.manager.conftest import ManagerFactory
from tests.manager.test_auth import bearer, buy, issue

ACTIONS = ("stop-process", "start-process", "restart-process")


async def test_the_owner_and_an_admin_may_act_and_another_user_may_not(
    make_manager: ManagerFactory, make_agent: AgentFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with make_manager(heartbeat_interval_s=0.2) as manager:
        agent_key, _ = await issue(manager, "agent-ops", "admin")
        link = {"url": manager.url, "slots": 1, "name": "ops", "key": agent_key}
        async with make_agent(manager=link) as agent:
            assert agent.runtime is not None
            assert agent.runtime.worker is not None
            await asyncio.wait_for(agent.runtime.worker.connected.wait(), 20)
            as_user = {}
            async with httpx.AsyncClient(base_url=manager.url) as to_manager:
                for user, role in (("ivy", "user"), ("jack", "user"), ("root", "admin")):
                    key, _ = await issue(manager, user, role)
                    as_user[user] = bearer((await buy(to_manager, key)).json()["token"])
            async with httpx.AsyncClient(base_url=agent.url, timeout=30) as to_agent:
                body = {"app": "ivys", "node": "0", "command": ["sleep", "60"]}
                created = await to_agent.post("/create-process", json=body, headers=as_user["ivy"])
                assert created.status_code == 201
                slug = created.json()["slug"]
                for action in ACTIONS:
                    refused = await to_agent.post(f"/{action}/{slug}", headers=as_user["jack"])
                    assert refused.status_code == 404, action
                    assert refused.json()["error"] == "not_found"
                    assert (await to_agent.post(f"/{action}/{slug}")).status_code == 401
                for who in ("ivy", "root"):
                    stopped = await to_agent.post(f"/stop-process/{slug}", headers=as_user[who])
                    assert (stopped.status_code, stopped.json()["state"]) == (200, "stopped"), who
                    started = await to_agent.post(f"/start-process/{slug}", headers=as_user[who])
                    assert started.status_code == 200, who
                    restarted = await to_agent.post(f"/restart-process/{slug}", headers=as_user[who])
                    assert restarted.status_code == 200, who
