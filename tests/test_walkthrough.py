"""The smartmob-agent seed's walkthrough, run as written against the herder agent.

The seed drives the agent with aiohttp's client and posts JSON with ``data=`` (so with
no JSON content type). Its doctest prints documents; herder's documents carry more
fields than the seed's examples, so each printed example is checked as a subset.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from herder.agent import Agent


def assert_contains(document: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        assert document[key] == value, (key, document[key], value)


async def test_seed_walkthrough(agent: Agent) -> None:
    app_root = agent.url
    ws_root = "ws" + app_root[4:]
    async with aiohttp.ClientSession() as client:
        # Starting a new session: the index links to the actions.
        response = await client.get(app_root)
        assert response.status == 200
        index = json.loads((await response.read()).decode("utf-8"))
        assert_contains(index, {"create": f"{app_root}/create-process", "list": f"{app_root}/list-processes"})

        response = await client.get(index["list"])
        assert response.status == 200
        listing = json.loads((await response.read()).decode("utf-8"))
        assert listing == {"processes": []}

        # Creating a process: JSON posted as plain data, exactly as the seed does.
        response = await client.post(
            index["create"],
            data=json.dumps(
                {
                    "app": "myapp",
                    "source_url": "http://...",
                    "process_type": "web",
                    "node": "web.0",
                }
            ),
        )
        assert response.status == 201
        process = json.loads((await response.read()).decode("utf-8"))
        expected = {
            "app": "myapp",
            "attach": f"{ws_root}/attach-console/myapp.web.0",
            "delete": f"{app_root}/delete-process/myapp.web.0",
            "details": f"{app_root}/process-status/myapp.web.0",
            "slug": "myapp.web.0",
        }
        assert_contains(process, expected)

        response = await client.get(index["list"])
        assert response.status == 200
        listing = json.loads((await response.read()).decode("utf-8"))
        assert len(listing["processes"]) == 1
        assert_contains(listing["processes"][0], expected)

        # Streaming logs.
        stream = await client.ws_connect(process["attach"])
        assert await stream.close()

        # Deleting a process.
        response = await client.post(process["delete"], data=json.dumps({}))
        assert response.status == 200

        response = await client.get(index["list"])
        assert json.loads(await response.read()) == {"processes": []}
