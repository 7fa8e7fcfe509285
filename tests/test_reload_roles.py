"""Who may reload an agent's config (#16): the file decides what runs for everyone, so on an
agent working for a manager with keys only an admin may; a user gets 403, no token 401."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from herder.auth import init_keys
from tests.conftest import AgentFactory
from tests.manager.conftest import ManagerFactory, db_url, make_manager
from tests.manager.keyed import keyed_agent, users_headers

__all__ = ["db_url", "make_manager"]  # fixtures, used by name


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_only_an_admin_may_reload(
    make_manager: ManagerFactory, make_agent: AgentFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with make_manager(heartbeat_interval_s=0.2) as manager:
        declared = [{"app": "cfg", "node": "web.1", "command": ["sleep", "60"]}]
        async with keyed_agent(manager, make_agent, "ops", "agent-ops", processes=declared) as agent:
            headers = await users_headers(manager, (("ivy", "user"), ("root", "admin")))
            async with httpx.AsyncClient(base_url=agent.url, timeout=30) as to_agent:
                assert (await to_agent.post("/reload-config")).status_code == 401
                refused = await to_agent.post("/reload-config", headers=headers["ivy"])
                assert refused.status_code == 403
                assert refused.json()["error"] == "forbidden"
                done = await to_agent.post("/reload-config", headers=headers["root"])
                assert done.status_code == 200
                assert done.json()["unchanged"] == ["cfg.web.1"]  # built in code: its own source
