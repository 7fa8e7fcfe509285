"""Following a build: the build log over the API and ``herder logs --build``, and
``herder run`` showing the build's progress until the process runs (real agent, real builds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from herder.agent import Agent
from herder.agent.processes.states import State
from tests.conftest import AgentFactory
from tests.fixtures.builds.wheels import write_wheel
from tests.helpers import run_herder, wait_unit
from tests.test_builds import build_agent, builds_of, create, failed, index_dir, running, write_app

__all__ = ["build_agent", "index_dir"]  # fixtures, used by name


async def herder(agent: Agent, *args: str) -> tuple[int, str, str]:
    """``herder ARGS --agent URL`` (builds may take a while)."""
    return await run_herder(*args, "--agent", agent.url, timeout_s=120)


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
            "--json",
        )
        assert code == 0, err
        assert '"name": "hello"' in out
        assert "[herder] pool hello: " in err
        assert "hellopkg" in err  # the build's own lines, from the pool's build log
        assert "build done" in err
        async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
            doc = (await client.get("/pools/hello")).json()
        assert all(i["process_state"] not in ("fetching", "building") for i in doc["instances"])


async def test_a_failed_build_keeps_its_log_and_is_made_again_when_asked(
    build_agent: AgentFactory, index_dir: Path, tmp_path: Path
) -> None:
    late = tmp_path / "late-index"  # latepkg appears here once the first build failed
    late.mkdir()
    app = write_app(tmp_path / "app", {"requirements.txt": "hellopkg\nlatepkg\n"})
    async with (
        build_agent(builds={"find_links": [str(index_dir), str(late)]}) as agent,
        httpx.AsyncClient(base_url=agent.url, timeout=30) as client,
    ):
        created = await create(client, "web.0", app.as_uri())
        error = await failed(agent, "hello.web.0")
        assert "latepkg" in error
        assert "rebuild: true" in error  # says how to have it made again
        # The failed build's log is linked, in full.
        doc = (await client.get(created["status"])).json()
        assert doc["build_log"] == f"{agent.url}/build-log/hello.web.0"
        log_text = (await client.get(doc["build_log"])).text
        assert "latepkg" in log_text
        assert "build failed" in log_text
        code, out, err = await herder(agent, "logs", "hello.web.0", "--build")
        assert code == 0, err
        assert out == log_text

        write_wheel(late, "latepkg", "1.0", {"latepkg.py": "X = 1\n"})
        # Not asked: the recorded failure stands, and its log is linked too.
        again = await create(client, "web.1", app.as_uri())
        assert await failed(agent, "hello.web.1") == error
        assert (await client.get(again["status"])).json()["build_log"].endswith("/build-log/hello.web.1")
        assert builds_of(agent).builds_run == 1
        # Asked (the CLI's --rebuild): made again, and it runs.
        code, _, err = await herder(
            agent, "run", "hello", "web.2", "--source", app.as_uri(), "--type", "web", "--rebuild"
        )
        assert code == 0, err
        assert "hello.web.2 is running" in err
        assert builds_of(agent).builds_run == 2
        await running(agent, "hello.web.2")
        # The build now stands: a plain create reuses it.
        await create(client, "web.3", app.as_uri())
        await running(agent, "hello.web.3")
        assert builds_of(agent).builds_run == 2


async def test_the_build_log_is_linked_while_the_app_builds(
    build_agent: AgentFactory, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    # The release phase waits (bounded) for the test's word: the build is caught in the middle.
    release = f"for i in $(seq 1200); do [ -e {go} ] && break; sleep 0.05; done; echo released"
    procfile = f"web: exec hello-serve\nrelease: {release}\n"
    app = write_app(tmp_path / "app", {"Procfile": procfile, "requirements.txt": "hellopkg\n"})
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        created = await create(client, "web.0", app.as_uri())
        unit = await wait_unit(agent.supervisor.units["hello.web.0"], lambda u: u.state is State.BUILDING, 30)
        doc = (await client.get(created["status"])).json()
        assert doc["state"] == "building"
        assert doc["build_log"] == f"{agent.url}/build-log/hello.web.0"
        answer = await client.get(doc["build_log"])
        assert answer.status_code == 200
        assert "released" not in answer.text
        go.touch()
        await running(agent, "hello.web.0")
        assert "released" in (await client.get(doc["build_log"])).text
        assert unit.build_log is not None
