"""#12 §2: 200 KB of nested ``[`` made both the agent and the manager answer a bare text
500 (``RecursionError``). JSON nested deeper than ``limits.max_json_depth`` is a 400
error document naming the body, on every route that reads JSON, on both servers."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import AgentFactory
from tests.manager.conftest import ManagerFactory

BOMB = b"[" * 200_000


def assert_refused_body(answer: httpx.Response) -> None:
    assert answer.status_code == 400, answer.text[:200]
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] == "invalid_json"
    assert answer.json()["field"] == "body"


@pytest.mark.parametrize("path", ["/create-process", "/pools"])
async def test_the_agent_refuses_deep_json(make_agent: AgentFactory, path: str) -> None:
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        assert_refused_body(await client.post(path, content=BOMB))


async def test_the_depth_bound_is_a_setting(make_agent: AgentFactory) -> None:
    nested = b'{"app": "a", "node": "n.0", "command": ["true"], "env": {"X": "' + b"[" * 100 + b'"}}'
    deep = b'{"app": "a", "node": "n.0", "command": ["true"], "x": ' + b"[" * 9 + b"]" * 9 + b"}"
    async with (
        make_agent(limits={"max_json_depth": 8}) as agent,
        httpx.AsyncClient(base_url=agent.url) as client,
    ):
        assert_refused_body(await client.post("/create-process", content=deep))
        # Brackets inside strings are not nesting.
        assert (await client.post("/create-process", content=nested)).status_code != 400


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/tasks"),
        ("PATCH", "/tasks/1"),
        ("POST", "/workers"),
        ("PATCH", "/workers/1"),
        ("POST", "/work-items/1/finished"),
    ],
)
async def test_the_manager_refuses_deep_json(make_manager: ManagerFactory, method: str, path: str) -> None:
    async with make_manager() as manager, httpx.AsyncClient(base_url=manager.url) as client:
        assert_refused_body(await client.request(method, path, content=BOMB))
