"""Following a build: the build log over the API and ``herder logs --build``, and
``herder run`` showing the build's progress until the process runs (real agent, real builds)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from herder.agent import Agent
from tests.conftest import AgentFactory
from tests.helpers import HERDER
from tests.test_builds import build_agent, create, index_dir, running, write_app

__all__ = ["build_agent", "index_dir"]  # fixtures, used by name


async def herder(agent: Agent, *args: str) -> tuple[int, str, str]:
    """Run the real binary (without blocking the agent, which runs in this loop)."""
    proc = await asyncio.create_subprocess_exec(
        HERDER,
        *args,
        "--agent",
        agent.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def requirements_app(root: Path) -> Path:
    return write_app(root, {"requirements.txt": "hellopkg==1.0\n"})


async def test_the_build_log_link_route_and_cli(build_agent: AgentFactory, tmp_path: Path) -> None:
    app = requirements_app(tmp_path / "app")
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        await create(client, "web.0", app.as_uri())
        await running(agent, "hello.web.0")
        doc: dict[str, Any] = (await client.get("/process-status/hello.web.0")).json()
        assert doc["build_log"] == f"{agent.url}/build-log/hello.web.0"
        answer = await client.get(doc["build_log"])
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        assert "hellopkg" in answer.text
        assert "build done" in answer.text

        created = await client.post(
            "/create-process", json={"app": "cmd", "node": "n", "command": ["sleep", "30"]}
        )
        assert "build_log" not in created.json()
        missing = await client.get("/build-log/cmd.n")
        assert missing.status_code == 404
        assert "cmd.n" in missing.json()["message"]
        unknown = await client.get("/build-log/nobody.here")
        assert unknown.status_code == 404
        assert "nobody.here" in unknown.json()["message"]

        code, out, err = await herder(agent, "logs", "hello.web.0", "--build")
        assert code == 0, err
        assert out == answer.text
        code, out, err = await herder(agent, "logs", "cmd.n", "--build")
        assert code == 1
        assert out == ""
        assert len(err.strip().splitlines()) == 1
        assert "no build log" in err


async def test_run_shows_the_build_and_returns_once_running(
    build_agent: AgentFactory, tmp_path: Path
) -> None:
    app = requirements_app(tmp_path / "app")
    async with build_agent() as agent:
        code, out, err = await herder(
            agent, "run", "hello", "web.0", "--source", app.as_uri(), "--type", "web"
        )
        assert code == 0, err
        assert '"slug": "hello.web.0"' in out  # the create's document, as without a build
        assert "[herder] building the app" in err
        assert "hellopkg" in err  # the installer's own lines
        assert "hello.web.0 is running" in err
        assert agent.supervisor.units["hello.web.0"].state.value == "running"


async def test_run_of_a_failing_build_exits_non_zero(build_agent: AgentFactory, tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {"requirements.txt": "no-such-package-here==9\n"})
    async with build_agent() as agent:
        code, _, err = await herder(agent, "run", "hello", "web.0", "--source", app.as_uri(), "--type", "web")
        assert code == 1
        assert "hello.web.0 failed" in err


async def test_pools_create_shows_the_build(build_agent: AgentFactory, tmp_path: Path) -> None:
    app = requirements_app(tmp_path / "app")
    async with build_agent() as agent:
        code, out, err = await herder(
            agent,
            "pools",
            "create",
            "hello",
            "--source",
            app.as_uri(),
            "--type",
            "web",
            "--listen",
            "127.0.0.1:0",
            "--min",
            "1",
        )
        assert code == 0, err
        assert '"name": "hello"' in out
        assert "[herder] pool hello: " in err
        async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
            doc = (await client.get("/pools/hello")).json()
        assert all(i["process_state"] not in ("fetching", "building") for i in doc["instances"])
