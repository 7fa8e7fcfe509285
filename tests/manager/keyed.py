"""An agent working for a manager with keys on, and users' tokens: the set-up of the
tests that check who may do what on such an agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from herder.agent.server import Agent
from herder.manager.server import Manager
from tests.conftest import AgentFactory


async def issue(manager: Manager, user: str, role: str = "user", ttl_s: int = 3600) -> tuple[str, str]:
    """A key for ``user`` (its secret and its id), issued in the manager's database."""
    assert manager.runtime is not None
    assert manager.authority is not None
    async with manager.runtime.transaction() as db:
        issued = await manager.authority.issue_key(db, user, role, ttl_s)
    return issued.key, issued.id


async def buy(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.post("/auth/token", headers={"Authorization": f"Bearer {key}"})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def keyed_agent(
    manager: Manager, make_agent: AgentFactory, name: str, key_user: str, **config: Any
) -> AsyncIterator[Agent]:
    """An agent linked to ``manager`` with an admin key of ``key_user``, once its link is up."""
    agent_key, _ = await issue(manager, key_user, "admin")
    link = {"url": manager.url, "slots": 1, "name": name, "key": agent_key}
    async with make_agent(manager=link, **config) as agent:
        assert agent.runtime is not None
        assert agent.runtime.worker is not None
        await asyncio.wait_for(agent.runtime.worker.connected.wait(), 20)
        yield agent


async def users_headers(manager: Manager, users: Iterable[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """A bearer header per ``(user, role)``: a key issued to each, and a token bought with it."""
    headers = {}
    async with httpx.AsyncClient(base_url=manager.url) as to_manager:
        for user, role in users:
            key, _ = await issue(manager, user, role)
            headers[user] = bearer((await buy(to_manager, key)).json()["token"])
    return headers
