"""#19 (found by the create's fast path): ``"\\ud800"`` is JSON to Python's parser but no
text: it cannot be written as UTF-8. A create carrying one in its command was accepted,
its record could not be written (a serialization error, not the OSError the create
handles), and the agent answered a bare 500 with the process left registered: it could
neither be deleted nor shown, and the list failed with it. Every route that reads JSON
now refuses such a string with a 422 naming the field, and nothing is created."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import AgentFactory
from tests.manager.conftest import ManagerFactory


def assert_refused(answer: httpx.Response, field: str) -> None:
    assert answer.status_code == 422, answer.text[:300]
    assert answer.json()["error"] == "invalid"
    assert answer.json()["field"] == field
    assert "UTF-8" in answer.json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"app": "s", "node": "n.0", "command": ["sleep", "\\ud800"]}', "command.1"),
        (b'{"app": "s", "node": "n.0", "command": ["true"], "env": {"X": "a\\udfffb"}}', "env.X"),
        (b'{"app": "s", "node": "n.0", "command": ["true"], "env": {"\\ud83d": "x"}}', "env"),
    ],
)
async def test_the_agent_refuses_lone_surrogates_and_creates_nothing(
    make_agent: AgentFactory, body: bytes, field: str
) -> None:
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        assert_refused(await client.post("/create-process", content=body), field)
        assert (await client.get("/process-status/s.n.0")).status_code == 404
        listing = await client.get("/list-processes")
        assert listing.status_code == 200
        assert listing.json()["processes"] == []
        # A pair of surrogates is one character, and is text.
        paired = b'{"app": "s", "node": "n.0", "command": ["echo", "\\ud83d\\ude00"]}'
        created = await client.post("/create-process", content=paired)
        assert created.status_code == 201, created.text
        assert created.json()["command"] == ["echo", "\U0001f600"]


async def test_the_manager_refuses_lone_surrogates(make_manager: ManagerFactory) -> None:
    async with make_manager() as manager, httpx.AsyncClient(base_url=manager.url) as client:
        body = b'{"type": "command", "name": "s", "settings": {"command": ["echo", "\\udc00"]}}'
        assert_refused(await client.post("/tasks", content=body), "settings.command.1")
        assert (await client.get("/tasks")).json()["tasks"] == []
