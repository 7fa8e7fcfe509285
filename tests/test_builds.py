"""Builds: apps that declare Python dependencies are built once, then run with them.

Real builds with uv into real venvs, from tiny wheels written by hand and served from a
directory (``[builds] find_links`` + ``no_index``): no network, a build in well under a
second. Each app's Procfile runs the ``hello-serve`` console script of ``hellopkg``, which
answers with its interpreter's prefix and a few environment variables.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from herder.agent import Agent
from herder.agent.builds import BuildContext, BuildError, Builds, IndexSettings, parse_env
from herder.agent.builds.interpreters import candidates, find_uv, satisfies
from herder.agent.processes.states import State
from tests.conftest import AgentFactory
from tests.fixtures.apps.appkit import Member, tar_bytes, write
from tests.fixtures.builds.npm import pack_greeter
from tests.fixtures.builds.wheels import write_index
from tests.helpers import poll, wait_http, wait_unit

BUILD_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_index(tmp_path_factory.mktemp("index"))


@pytest.fixture
def build_agent(make_agent: AgentFactory, index_dir: Path) -> AgentFactory:
    """Agents whose builds install from the local index only."""

    def factory(**overrides: Any) -> Any:
        overrides["builds"] = {
            "find_links": [str(index_dir)],
            "no_index": True,
            **overrides.get("builds", {}),
        }
        return make_agent(**overrides)

    return factory


def write_app(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in {"Procfile": "web: exec hello-serve\n", **files}.items():
        (root / name).write_text(text)
    return root


async def create(client: httpx.AsyncClient, node: str, source: str, **extra: Any) -> dict[str, Any]:
    body = {"app": "hello", "node": node, "source_url": source, "process_type": "web", **extra}
    response = await client.post("/create-process", json=body)
    assert response.status_code == 201, response.text
    doc: dict[str, Any] = response.json()
    return doc


async def running(agent: Agent, slug: str) -> dict[str, Any]:
    """Wait until the unit runs and answers; its answer."""
    unit = await wait_unit(
        agent.supervisor.units[slug], lambda u: u.state in (State.RUNNING, State.FAILED), BUILD_TIMEOUT_S
    )
    assert unit.state is State.RUNNING, unit.error
    async with httpx.AsyncClient(timeout=5.0) as http:
        for _ in range(500):
            try:
                answer = await http.get(f"http://127.0.0.1:{unit.port}/")
            except httpx.TransportError:
                await asyncio.sleep(0.02)
                continue
            doc: dict[str, Any] = answer.json()
            return doc
    raise AssertionError(f"{slug} never answered")


async def failed(agent: Agent, slug: str) -> str:
    unit = await wait_unit(
        agent.supervisor.units[slug], lambda u: u.state is not State.FETCHING, BUILD_TIMEOUT_S
    )
    unit = await wait_unit(unit, lambda u: u.state in (State.RUNNING, State.FAILED), BUILD_TIMEOUT_S)
    assert unit.state is State.FAILED
    assert unit.restarts == 0
    assert unit.error is not None
    return unit.error


def builds_of(agent: Agent) -> Builds:
    builds = agent.supervisor._apps.builds
    assert builds is not None
    return builds


def build_dirs(agent: Agent) -> list[Path]:
    root = agent.config.data_dir / "builds"
    return sorted(p for p in root.iterdir() if p.name != "cache")


async def test_requirements_app_runs_in_its_venv_with_env_in_order(
    build_agent: AgentFactory, tmp_path: Path
) -> None:
    app = write_app(
        tmp_path / "app",
        {
            "requirements.txt": "hellopkg==1.0\nhellodep\n",
            ".env": "# the app's defaults\nGREETING='from dotenv'\nFROM_DOTENV=\"yes\\tquoted\"\n",
        },
    )
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", app.as_uri(), env={"GREETING": "from request", "VIRTUAL_ENV": "/mine"})
        answer = await running(agent, "hello.web.0")
        (build,) = build_dirs(agent)
        assert answer["prefix"] == str(build / "venv")
        assert answer["PATH"].split(":")[0] == str(build / "venv" / "bin")
        # request env > .env > build's env
        assert answer["GREETING"] == "from request"
        assert answer["FROM_DOTENV"] == "yes\tquoted"
        assert answer["VIRTUAL_ENV"] == "/mine"
        assert (build / "done").is_file()
        assert "hellopkg" in (build / "build.log").read_text()
        notes = [line.decode() for stream, line in agent.supervisor.units["hello.web.0"].output.ring]
        assert any("building the app" in n for n in notes)
        assert any("pip install" in n for n in notes)  # the build's own lines, as attach shows them


async def test_pyproject_app_from_an_archive(build_agent: AgentFactory, tmp_path: Path) -> None:
    pyproject = '[project]\nname = "hello-app"\nversion = "0"\ndependencies = ["hellopkg"]\n'
    members = [
        Member("hello-1/Procfile", b"web: exec hello-serve\n"),
        Member("hello-1/pyproject.toml", pyproject.encode()),
    ]
    archive = write(tmp_path / "hello.tgz", tar_bytes(members, "gz"))
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", archive.as_uri())
        answer = await running(agent, "hello.web.0")
        assert answer["VIRTUAL_ENV"] == answer["prefix"]
        workdir = agent.config.data_dir / "run" / "hello.web.0" / "app"
        assert (workdir / "pyproject.toml").is_file()


async def test_pyproject_app_with_uv_lock(build_agent: AgentFactory, index_dir: Path, tmp_path: Path) -> None:
    pyproject = (
        '[project]\nname = "locked"\nversion = "0"\nrequires-python = ">=3.8"\ndependencies = ["hellopkg"]\n'
    )
    app = write_app(tmp_path / "app", {"pyproject.toml": pyproject})
    uv = find_uv()
    assert uv is not None, "uv is in the dev extras"
    locking = subprocess.run(
        [uv, "lock", "--no-index", "--find-links", str(index_dir)], cwd=app, capture_output=True, text=True
    )
    assert locking.returncode == 0, locking.stderr
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", app.as_uri())
        answer = await running(agent, "hello.web.0")
        (build,) = build_dirs(agent)
        assert answer["prefix"] == str(build / "venv")
        assert "uv sync --frozen" in (build / "build.log").read_text()


MANAGE_PY = """\
import pathlib
import sys

import django  # the venv's: manage.py runs with the build's interpreter

if sys.argv[1:] == ["collectstatic", "--noinput"]:
    pathlib.Path("staticfiles").mkdir()
    pathlib.Path("staticfiles/site.css").write_text("body {}")
    print("1 static file copied to 'staticfiles'.")
"""


@pytest.mark.parametrize("disabled", [False, True])
async def test_django_apps_get_collectstatic(
    build_agent: AgentFactory, tmp_path: Path, disabled: bool
) -> None:
    files = {"requirements.txt": "hellopkg\ndjango\n", "manage.py": MANAGE_PY}
    if disabled:
        files[".env"] = "DISABLE_COLLECTSTATIC=1\n"
    app = write_app(tmp_path / "app", files)
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", app.as_uri())
        await running(agent, "hello.web.0")
        # Where the process runs (for a directory app: its build's tree).
        workdir = Path(os.readlink(f"/proc/{agent.supervisor.units['hello.web.0'].pid}/cwd"))
        assert workdir.is_relative_to(agent.config.data_dir)
        assert (workdir / "staticfiles" / "site.css").exists() is not disabled
        assert not (app / "staticfiles").exists()  # the checkout is left alone


async def test_the_release_phase_runs_once_before_the_processes(
    build_agent: AgentFactory, tmp_path: Path
) -> None:
    procfile = (
        "release: echo released >> release.txt; command -v hello-serve >> release.txt\n"
        "web: exec hello-serve\n"
    )
    app = write_app(tmp_path / "app", {"requirements.txt": "hellopkg\n", "Procfile": procfile})
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await asyncio.gather(create(client, "web.0", app.as_uri()), create(client, "web.1", app.as_uri()))
        await asyncio.gather(running(agent, "hello.web.0"), running(agent, "hello.web.1"))
        for node in ("web.0", "web.1"):
            cwd = Path(os.readlink(f"/proc/{agent.supervisor.units[f'hello.{node}'].pid}/cwd"))
            released = cwd / "release.txt"  # in the tree the process runs in
            (build,) = build_dirs(agent)
            assert released.read_text() == f"released\n{build / 'venv' / 'bin' / 'hello-serve'}\n"


async def test_an_app_without_dependencies_has_a_release_phase_too(
    build_agent: AgentFactory, tmp_path: Path
) -> None:
    procfile = "release: echo released > release.txt\nweb: cat release.txt; exec sleep 1000\n"
    app = write_app(tmp_path / "app", {"Procfile": procfile})
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", app.as_uri())
        unit = await wait_unit(agent.supervisor.units["hello.web.0"], lambda u: u.state is State.RUNNING)
        await poll(lambda: any(line == b"released" for _, line in unit.output.ring))
        assert not (app / "release.txt").exists()  # in the build's copy, not the checkout
        assert builds_of(agent).builds_run == 1


async def test_a_failed_release_phase_fails_the_process(build_agent: AgentFactory, tmp_path: Path) -> None:
    procfile = "release: echo migrating; echo no database >&2; exit 3\nweb: exec hello-serve\n"
    app = write_app(tmp_path / "app", {"requirements.txt": "hellopkg\n", "Procfile": procfile})
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", app.as_uri())
        error = await failed(agent, "hello.web.0")
        assert error.startswith("the release phase failed: sh exited with code 3")
        assert "no database" in error


needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")


@pytest.fixture(scope="session")
def greeter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pack_greeter(tmp_path_factory.mktemp("npm"))


@needs_npm
@pytest.mark.parametrize("locked", [False, True])
async def test_node_app(build_agent: AgentFactory, greeter: Path, tmp_path: Path, locked: bool) -> None:
    manifest = {"name": "app", "version": "0.0.0", "dependencies": {"greeter": f"file:{greeter}"}}
    app = write_app(
        tmp_path / "app", {"package.json": json.dumps(manifest), "Procfile": "web: exec greet-serve\n"}
    )
    if locked:
        lock = [shutil.which("npm") or "npm", "install", "--package-lock-only", "--no-audit", "--no-fund"]
        subprocess.run(lock, cwd=app, check=True, capture_output=True)
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", app.as_uri())
        answer = await running(agent, "hello.web.0")
        (build,) = build_dirs(agent)
        assert answer["NODE_PATH"] == str(build / "slug" / "node_modules")
        assert ("npm ci" if locked else "npm install") in (build / "build.log").read_text()


@needs_npm
async def test_an_app_with_python_and_node_gets_both(
    build_agent: AgentFactory, greeter: Path, tmp_path: Path
) -> None:
    manifest = {"name": "app", "version": "0.0.0", "dependencies": {"greeter": f"file:{greeter}"}}
    app = write_app(
        tmp_path / "app", {"package.json": json.dumps(manifest), "requirements.txt": "hellopkg\n"}
    )
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", app.as_uri())
        answer = await running(agent, "hello.web.0")
        (build,) = build_dirs(agent)
        path = answer["PATH"].split(":")
        assert path[:2] == [str(build / "slug" / "node_modules" / ".bin"), str(build / "venv" / "bin")]


async def test_pip_builds_where_uv_is_not_wanted(build_agent: AgentFactory, tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {"requirements.txt": "hellopkg\n"})
    async with (
        build_agent(builds={"python_installer": "pip"}) as agent,
        httpx.AsyncClient(base_url=agent.url) as c,
    ):
        await create(c, "web.0", app.as_uri())
        answer = await running(agent, "hello.web.0")
        (build,) = build_dirs(agent)
        assert answer["prefix"] == str(build / "venv")
        log = (build / "build.log").read_text()
        assert "-m venv" in log
        assert "-m pip install" in log


async def test_pipfile_lock_app(build_agent: AgentFactory, tmp_path: Path) -> None:
    lock = {
        "_meta": {},
        "default": {"hellopkg": {"version": "==1.0"}},
        "develop": {"hellodep": {"version": "==2.0"}},
    }
    app = write_app(tmp_path / "app", {"Pipfile.lock": json.dumps(lock)})
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", app.as_uri())
        answer = await running(agent, "hello.web.0")
        (build,) = build_dirs(agent)
        assert answer["prefix"] == str(build / "venv")
        assert not list(
            (build / "venv").glob("lib/python*/site-packages/hellodep.py")
        )  # develop: not installed


async def test_a_failed_build_fails_once_and_is_not_retried(
    build_agent: AgentFactory, tmp_path: Path
) -> None:
    app = write_app(tmp_path / "app", {"requirements.txt": "hellopkg\nnosuchpkg\n"})
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        created = await create(client, "web.0", app.as_uri())
        error = await failed(agent, "hello.web.0")
        assert "nosuchpkg" in error
        # The same app again: the recorded failure, at once, with no second build.
        await create(client, "web.1", app.as_uri())
        assert await failed(agent, "hello.web.1") == error
        assert builds_of(agent).builds_run == 1
        doc = (await client.get(created["status"])).json()
        assert doc["state"] == "failed"
        assert "nosuchpkg" in doc["error"]


def other_interpreter() -> str | None:
    """A Python minor version on this host other than the agent's own, if there is one."""
    own = sys.version_info[:2]
    for interp in candidates():
        # pyenv's (``.../bin/python``) are real interpreters; PATH's may be pyenv's shims.
        if interp.version[:2] != own and interp.version >= (3, 8) and interp.path.endswith("/bin/python"):
            return ".".join(map(str, interp.version[:2]))
    return None


async def test_the_interpreter_the_app_asks_for(build_agent: AgentFactory, tmp_path: Path) -> None:
    wanted = other_interpreter()
    if wanted is None:
        pytest.skip("no Python on this host besides the agent's own")
    app = write_app(tmp_path / "app", {"requirements.txt": "hellopkg\n", "runtime.txt": f"python-{wanted}\n"})
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", app.as_uri())
        await running(agent, "hello.web.0")
        (build,) = build_dirs(agent)
        assert f"version_info = {wanted}." in (build / "venv" / "pyvenv.cfg").read_text()


async def test_a_missing_interpreter_names_what_was_asked_and_found(
    build_agent: AgentFactory, tmp_path: Path
) -> None:
    app = write_app(tmp_path / "app", {"requirements.txt": "hellopkg\n", ".python-version": "3.99\n"})
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", app.as_uri())
        error = await failed(agent, "hello.web.0")
        assert "Python 3.99 was asked for" in error
        assert "3.11" in error.split("found:")[1]
        assert builds_of(agent).builds_run == 0


async def test_two_creates_at_once_build_once(build_agent: AgentFactory, tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {"requirements.txt": "hellopkg\n"})
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await asyncio.gather(create(client, "web.0", app.as_uri()), create(client, "web.1", app.as_uri()))
        first, second = await asyncio.gather(running(agent, "hello.web.0"), running(agent, "hello.web.1"))
        assert first["prefix"] == second["prefix"]
        assert builds_of(agent).builds_run == 1
        assert len(build_dirs(agent)) == 1


async def test_a_pool_of_three_builds_once(build_agent: AgentFactory, tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {"requirements.txt": "hellopkg\n"})
    body = {
        "name": "hello",
        "source_url": app.as_uri(),
        "process_type": "web",
        "listen": "127.0.0.1:0",
        "min_instances": 3,
        "max_instances": 3,
    }
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
        created = await client.post("/pools", json=body)
        assert created.status_code == 201, created.text
        doc = await wait_http(
            client,
            created.json()["details"],
            lambda d: sum(i["state"] == "ready" for i in d["instances"]) == 3,
            timeout_s=BUILD_TIMEOUT_S,
        )
        assert builds_of(agent).builds_run == 1
        async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
            answer = (await through.get("/")).json()
        (build,) = build_dirs(agent)
        assert answer["prefix"] == str(build / "venv")


async def test_a_build_is_reused_after_an_agent_restart(build_agent: AgentFactory, tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {"requirements.txt": "hellopkg\n"})
    async with build_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", app.as_uri())
        before = await running(agent, "hello.web.0")
        (build,) = build_dirs(agent)
        log_mtime = (build / "build.log").stat().st_mtime_ns
    async with build_agent() as again:
        after = await running(again, "hello.web.0")  # restored from the record
        assert after["prefix"] == before["prefix"]
        assert builds_of(again).builds_run == 0
        assert (build / "build.log").stat().st_mtime_ns == log_mtime


class SilentIndex:
    """A package index that accepts connections and never answers: a build hangs in uv."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        await reader.read()
        writer.close()

    async def __aenter__(self) -> dict[str, Any]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return {"index_url": f"http://127.0.0.1:{port}/simple/", "find_links": [], "no_index": False}

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()


async def test_a_build_cut_short_by_an_agent_stop_is_made_again(
    build_agent: AgentFactory, tmp_path: Path
) -> None:
    app = write_app(tmp_path / "app", {"requirements.txt": "hellopkg\n"})
    silent = SilentIndex()
    async with (
        silent as hanging,
        build_agent(builds=hanging) as agent,
        httpx.AsyncClient(base_url=agent.url) as client,
    ):
        first = await create(client, "web.0", app.as_uri())
        await create(client, "web.1", app.as_uri())
        await asyncio.wait_for(silent.connected.wait(), BUILD_TIMEOUT_S)
        units = agent.supervisor.units
        await wait_unit(units["hello.web.1"], lambda u: u.state is State.BUILDING)
        # A process deleted while it waits for a build leaves; the build goes on for the other.
        deleted = await client.post(first["delete"], content="{}")
        assert deleted.status_code == 200
        assert not (agent.config.data_dir / "run" / "hello.web.0").exists()
        assert units["hello.web.1"].state is State.BUILDING
        (build,) = build_dirs(agent)
    assert not (build / "done").exists()
    assert not (build / "failed").exists()
    async with build_agent() as again:
        await running(again, "hello.web.1")
        assert builds_of(again).builds_run == 1
        assert (build / "done").is_file()


async def test_a_build_that_takes_too_long_fails(build_agent: AgentFactory, tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {"requirements.txt": "hellopkg\n"})
    async with (
        SilentIndex() as hanging,
        build_agent(builds={**hanging, "timeout_s": 0.5}) as agent,
        httpx.AsyncClient(base_url=agent.url) as client,
    ):
        await create(client, "web.0", app.as_uri())
        error = await failed(agent, "hello.web.0")
        assert error.startswith("build timed out after 0.5 s")


async def test_builds_unused_for_keep_unused_s_are_collected(
    build_agent: AgentFactory, tmp_path: Path
) -> None:
    old_app = write_app(tmp_path / "old", {"requirements.txt": "hellopkg\n"})
    kept_app = write_app(tmp_path / "kept", {"requirements.txt": "hellopkg\nhellodep\n"})
    new_app = write_app(tmp_path / "new", {"requirements.txt": "hellodep\nhellopkg\n"})
    async with (
        build_agent(builds={"keep_unused_s": 3600}) as agent,
        httpx.AsyncClient(base_url=agent.url) as client,
    ):
        old = await create(client, "old.0", old_app.as_uri())
        await create(client, "kept.0", kept_app.as_uri())
        await running(agent, "hello.old.0")
        await running(agent, "hello.kept.0")
        old_build, kept_build = sorted(
            build_dirs(agent), key=lambda p: (p / "slug" / "requirements.txt").read_text()
        )
        deleted = await client.post(old["delete"], content="{}")
        assert deleted.status_code == 200
        # Two hours pass for both builds; only the old one has no process any more.
        for build in (old_build, kept_build):
            for marker in ("used", "done"):
                hours_ago = (build / marker).stat().st_mtime - 7200
                os.utime(build / marker, (hours_ago, hours_ago))
        await create(client, "new.0", new_app.as_uri())  # a new build collects after itself
        await running(agent, "hello.new.0")
        # Collected: renamed into the trash, then the trash emptied (in a worker thread).
        builds_root = agent.config.data_dir / "builds"
        await poll(lambda: not old_build.exists() and not list(builds_root.glob(".trash*")))
        assert kept_build.is_dir()
        assert len(build_dirs(agent)) == 2
        assert not [p for p in (agent.config.data_dir / "builds").iterdir() if p.name.startswith(".trash")]


async def test_an_app_without_dependencies_is_not_built(agent: Agent, tmp_path: Path) -> None:
    app = tmp_path / "plain"
    app.mkdir()
    (app / "Procfile").write_text('web: echo "G=$GREETING D=$FROM_DOTENV"; exec sleep 1000\n')
    (app / ".env").write_text("GREETING=dotenv\nFROM_DOTENV=yes\n")
    async with httpx.AsyncClient(base_url=agent.url) as client:
        await create(client, "web.0", app.as_uri(), env={"GREETING": "request"})
    unit = await wait_unit(agent.supervisor.units["hello.web.0"], lambda u: u.state is State.RUNNING)
    assert unit.error is None
    await poll(lambda: any(line == b"G=request D=yes" for _, line in unit.output.ring))
    assert not (agent.config.data_dir / "builds").exists()


def test_env_file_reads_as_honcho_does() -> None:
    text = "\n".join(
        [
            "# comment",
            "",
            "export A=1",
            "B = 'single $quoted'",
            'C="double\\nline \\"q\\""',
            "D=plain value # trailing comment",
            "not a line",
            "E=",
        ]
    )
    assert parse_env(text) == {
        "A": "1",
        "B": "single $quoted",
        "C": 'double\nline "q"',
        "D": "plain value",
        "E": "",
    }


def test_build_log_lines_are_json_free() -> None:
    # The done marker is JSON the agent reads back; a build env survives the round trip.
    from herder.agent.builds import BuiltEnv

    env = BuiltEnv(path=("/v/bin",), env={"VIRTUAL_ENV": "/v"})
    assert BuiltEnv.from_json(json.loads(json.dumps(env.to_json()))) == env


@pytest.mark.parametrize(
    ("version", "wanted", "ok"),
    [
        ((3, 11, 7), "3.11", True),
        ((3, 11, 7), "3.11.7", True),
        ((3, 11, 7), "3.11.8", False),
        ((3, 12, 1), "3.11", False),
        ((3, 11, 7), ">=3.10,<3.13", True),
        ((3, 13, 0), ">=3.10,<3.13", False),
        ((3, 11, 7), "~=3.10", True),
        ((3, 11, 7), "==3.11.*", True),
        ((3, 11, 7), "!=3.11.*", False),
        ((3, 9, 18), ">=3.10", False),
    ],
)
def test_interpreter_versions_match_as_asked(version: tuple[int, ...], wanted: str, ok: bool) -> None:
    assert satisfies(version, wanted) is ok


async def test_build_commands_stream_lines_and_fail_with_their_last_ones(tmp_path: Path) -> None:
    lines: list[str] = []
    ctx = BuildContext(
        app_root=tmp_path,
        build_dir=tmp_path,
        cache_dir=tmp_path,
        env=dict(os.environ),
        index=IndexSettings(),
        timeout_s=10.0,
        log=lines.append,
    )
    script = "import sys; print('first'); sys.stdout.write('x' * 200000 + '\\rprogress 100%\\n'); sys.exit(2)"
    with pytest.raises(BuildError, match=r"exited with code 2:\nfirst\nprogress 100%$"):
        await ctx.run([sys.executable, "-c", script])
    assert lines[-2:] == ["first", "progress 100%"]
