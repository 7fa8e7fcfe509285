"""``herder pools ...`` against a real agent: the commands a user types."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx

from herder.agent import Agent
from tests.helpers import run_herder, wait_http

APP = str(Path(__file__).parent / "apps" / "pool_app.py")


async def herder(agent: Agent, *args: str) -> tuple[int, str, str]:
    """``herder pools VERB --agent URL ARGS`` (the agent before ARGS, which may hold ``--``)."""
    return await run_herder("pools", args[0], "--agent", agent.url, *args[1:])


async def test_create_ls_scale_drain_resume_rm(agent: Agent) -> None:
    code, out, err = await herder(
        agent,
        "create",
        "cli",
        "--listen",
        "127.0.0.1:0",
        "--max",
        "2",
        "--json",
        "--",
        sys.executable,
        APP,
        "--port",
        "{port}",
    )
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    assert doc["spec"]["max_instances"] == 2
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30) as through:
        assert (await through.get("/pid")).status_code == 200
    code, out, _ = await herder(agent, "ls")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["NAME", "STATE", "READY"]
    assert out.splitlines()[1].split()[:4] == ["cli", "active", "1", "1"]
    code, out, _ = await herder(agent, "scale", "cli", "--min", "2")
    assert code == 0
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        await wait_http(
            client, "/pools/cli", lambda d: sum(i["state"] == "ready" for i in d["instances"]) == 2
        )
    code, out, _ = await herder(agent, "drain", "cli", "--timeout", "5", "--json")
    assert json.loads(out)["state"] == "drained"
    code, out, _ = await herder(agent, "resume", "cli", "--json")
    assert json.loads(out)["state"] == "active"
    code, out, _ = await herder(agent, "rm", "cli")
    assert code == 0
    assert out.splitlines() == [out.strip()]  # one line by default
    assert out.startswith("pool cli deleted: ")
    code, _, err = await herder(agent, "show", "cli")
    assert code == 1
    assert "404" in err
    assert "no pool named 'cli'" in err


async def test_bad_input_is_reported_with_the_field(agent: Agent) -> None:
    code, _, err = await herder(agent, "create", "Bad_Name", "--", "true")
    assert code == 1
    assert "422" in err
    assert "field: name" in err
    code, _, err = await herder(agent, "scale", "nothere")
    assert code != 0
    assert "give --min, --max or both" in err
