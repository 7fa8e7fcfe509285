"""On an agent working for a manager with keys, who may stop, start and restart a process:
whoever may delete it (its owner, or an admin); to another user it does not exist."""

from __future__ import annotations

from pathlib import Path

import httpx

from herder.auth import init_keys
from tests.conftest import AgentFactory
from tests.manager.conftest import ManagerFactory
from tests.manager.keyed import keyed_agent, users_headers

ACTIONS = ("stop-process", "start-process", "restart-process")


async def test_the_owner_and_an_admin_may_act_and_another_user_may_not(
    make_manager: ManagerFactory, make_agent: AgentFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with (
        make_manager(heartbeat_interval_s=0.2) as manager,
        keyed_agent(manager, make_agent, "ops", "agent-ops") as agent,
    ):
        as_user = await users_headers(manager, (("ivy", "user"), ("jack", "user"), ("root", "admin")))
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
