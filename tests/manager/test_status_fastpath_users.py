"""The status reads on the agent's fast path (``herder.agent.api.fastreads``) show each user
what the routes do: their own processes; another user's is absent (404, not listed)."""

from __future__ import annotations

from pathlib import Path

import httpx

from herder.agent.api.fastreads import FastReads
from herder.auth import init_keys
from tests.conftest import AgentFactory
from tests.manager.conftest import ManagerFactory
from tests.manager.keyed import keyed_agent, users_headers


async def test_each_user_sees_their_own_on_the_fast_path(
    make_manager: ManagerFactory, make_agent: AgentFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with (
        make_manager(heartbeat_interval_s=0.2) as manager,
        keyed_agent(manager, make_agent, "ops", "agent-ops") as agent,
    ):
        fast = agent._server.config.http.fast_reads
        assert isinstance(fast, FastReads)
        as_user = await users_headers(manager, (("ivy", "user"), ("jack", "user"), ("root", "admin")))
        async with httpx.AsyncClient(base_url=agent.url, timeout=30) as to_agent:
            body = {"app": "ivys", "node": "0", "command": ["sleep", "60"]}
            created = await to_agent.post("/create-process", json=body, headers=as_user["ivy"])
            assert created.status_code == 201
            slug = created.json()["slug"]
            before = fast.answered
            for who, listed in (("ivy", [slug]), ("root", [slug]), ("jack", [])):
                listing = await to_agent.get("/list-processes", headers=as_user[who])
                assert [p["slug"] for p in listing.json()["processes"]] == listed, who
                status = await to_agent.get(f"/process-status/{slug}", headers=as_user[who])
                assert status.status_code == (200 if listed else 404), who
            missing = await to_agent.get("/list-processes")
            assert missing.status_code == 401
            # Two reads each for ivy and root, jack's listing; not jack's 404 or the 401.
            assert fast.answered - before == 5
