"""#12 §6: 405 answers carried no ``Allow`` header (RFC 9110 requires one). They name
every method the path accepts, across the routes that share it (``GET /tasks`` and
``POST /tasks`` are two routes)."""

from __future__ import annotations

import httpx

from herder.agent import Agent
from tests.manager.conftest import ManagerFactory


def methods(answer: httpx.Response) -> set[str]:
    assert answer.status_code == 405
    assert answer.json()["error"] == "method_not_allowed"
    return {m.strip() for m in answer.headers["allow"].split(",")}


async def test_the_agent_says_what_is_allowed(agent: Agent, client: httpx.AsyncClient) -> None:
    assert methods(await client.put("/list-processes")) == {"GET"}
    assert methods(await client.get("/create-process")) == {"POST"}


async def test_the_manager_says_what_is_allowed(make_manager: ManagerFactory) -> None:
    async with make_manager() as manager, httpx.AsyncClient(base_url=manager.url) as client:
        assert methods(await client.put("/tasks")) == {"GET", "POST"}
        assert methods(await client.post("/tasks/1")) >= {"GET", "PATCH", "DELETE"}
