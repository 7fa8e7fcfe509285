"""The everyday commands (issue 16): the quick path, its options against typer's, and
what the commands print, run as the real binary against a real agent."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main

from herder import cli
from herder.agent import Agent
from herder.cli import manager_ops, quick
from tests.conftest import AgentFactory
from tests.helpers import run_herder, wait_http

# A line on stderr, then (well after it: the agent reads the two pipes apart) ten on stdout.
TALK = (
    "import sys, time\nprint('err', file=sys.stderr, flush=True)\ntime.sleep(0.3)\n"
    "for i in range(10): print('out', i, flush=True)\ntime.sleep(1000)"
)


def click_command(words: tuple[str, ...]) -> Any:
    """The click command typer builds for ``herder WORDS``."""
    command: Any = typer.main.get_command(cli.build_app())
    for word in words:
        command = command.commands[word]
    return command


def typer_options(command: Any) -> dict[str, tuple[frozenset[str], str | None, bool, bool]]:
    """Each option's dest: (its names, its variable, whether a flag, whether repeatable)."""
    found = {}
    for param in command.params:
        if param.param_type_name == "option" and "--help" not in param.opts:
            envvar = param.envvar if isinstance(param.envvar, str) else None
            names = frozenset(param.opts + param.secondary_opts)
            found[param.name] = (names, envvar, bool(param.is_flag), bool(param.multiple))
    return found


@pytest.mark.parametrize("spec", quick.COMMANDS, ids=lambda s: " ".join(s.words))
def test_a_quick_command_takes_the_options_of_its_typer_twin(spec: quick.Spec) -> None:
    command = click_command(spec.words)
    mine = {o.dest: (frozenset(o.names), o.envvar, o.kind == "flag", o.kind == "multi") for o in spec.options}
    assert mine == typer_options(command)
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    assert [("*" if p.nargs == -1 else "") + str(p.name) for p in arguments] == list(spec.args)
    for opt in spec.options:
        param = next(p for p in command.params if p.name == opt.dest)
        if opt.kind != "flag":
            assert param.default == opt.default or (param.default is None and opt.default is None)


def test_the_choices_are_the_tree_s() -> None:
    from herder.cli import task_cmds, tree

    assert tuple(s.value for s in task_cmds.TaskStatus) == manager_ops.TASK_STATUSES
    assert tuple(level.value for level in tree.LogLevel) == quick.LOG_LEVELS


def test_the_top_options_are_the_tree_s() -> None:
    command = typer.main.get_command(cli.build_app())
    tree = {n for p in command.params for n in p.opts if p.name not in ("version", "help")}
    tree -= {"--install-completion", "--show-completion"}
    assert tree == {n for o in quick.TOP_OPTIONS for n in o.names}


@pytest.mark.parametrize(
    "argv",
    [
        ["ps", "--help"],
        ["--help"],
        ["--version"],
        ["ps", "--no-such-option"],
        ["tasks", "ls", "--status", "nonsense"],
        ["tasks", "submit", "frames", "--priority", "high"],
        ["tasks", "submit", "command", "--settings", "[1]"],
        ["logs", "a.b", "-n", "-1"],
        ["logs", "a.b", "-n", "many"],
        ["status"],
        ["status", "a.b", "c.d"],
        ["agent"],
        ["--log-level", "loud", "ps"],
    ],
)
def test_the_quick_path_leaves_what_it_is_unsure_of_to_typer(argv: list[str]) -> None:
    with pytest.raises(quick.Unsure):
        parse_then_check(argv)


def parse_then_check(argv: list[str]) -> None:
    """``quick.parse``, then the checks a command makes before its first call (to a
    port nothing listens on: reaching it would be a bug here)."""
    spec, values = quick.parse(argv)
    spec.run({**values, "manager": "http://127.0.0.1:9", "agent": "http://127.0.0.1:9"})


def test_values_come_from_options_then_top_options_then_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERDER_AGENT_URL", "http://env")
    assert quick.parse(["ps"])[1]["agent"] == "http://env"
    assert quick.parse(["--agent", "http://top", "ps"])[1]["agent"] == "http://top"
    assert quick.parse(["--agent=http://top", "ps", "--agent", "http://mine"])[1]["agent"] == "http://mine"
    spec, values = quick.parse(["tasks", "submit", "command", "-s", "a=1", "--", "echo", "--x"])
    assert spec.words == ("tasks", "submit")
    assert values["argv"] == ["echo", "--x"]
    assert values["setting"] == ["a=1"]
    assert values["priority"] == 0
    monkeypatch.delenv("HERDER_AGENT_URL")
    assert quick.parse(["logs", "-f", "a.b", "-n", "5"])[1] | {"agent": None} == {
        "slug": "a.b",
        "follow": True,
        "lines": 5,
        "build": False,
        "agent": None,
        "token_file": None,
    }


async def test_the_quick_path_imports_neither_typer_nor_httpx(agent: Agent) -> None:
    probe = (
        "import sys\nfrom herder.cli import main\n"
        f"sys.argv = ['herder', '--agent', {agent.url!r}, 'ps']\nmain()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'httpx', 'pydantic', 'click'}))"
    )
    code, out, err = await run_python(probe)
    assert code == 0, err
    assert out.splitlines()[-1] == "[]"


async def run_python(code: str) -> tuple[int, str, str]:
    """``python -c code`` without blocking the agent's loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _wait_lines(agent: Agent, slug: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        unit = agent.supervisor.units[slug]
        if len(unit.output.ring) >= count:
            return
        assert time.monotonic() < deadline, f"{slug} wrote {len(unit.output.ring)} lines"
        await asyncio.sleep(0.05)


async def test_ps_before_or_after_json_and_figures(agent: Agent) -> None:
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        made = await client.post(
            "/create-process", json={"app": "q", "node": "talk", "command": [sys.executable, "-c", TALK]}
        )
        assert made.status_code == 201, made.text
        await _wait_lines(agent, "q.talk", 11)
        for argv in (["--agent", agent.url, "ps"], ["ps", "--agent", agent.url]):
            code, out, err = await run_herder(*argv)
            assert code == 0, err
            lines = out.splitlines()
            assert lines[0].split() == [
                "SLUG",
                "STATE",
                "PID",
                "UPTIME",
                "PORT",
                "CPU",
                "RSS",
                "RESTARTS",
                "ERROR",
            ]
            assert lines[1].split()[:2] == ["q.talk", "running"]
        code, out, err = await run_herder("--agent", agent.url, "ps", "--json")
        assert code == 0, err
        listing = json.loads(out)
        assert [p["slug"] for p in listing["processes"]] == ["q.talk"]

        code, out, err = await run_herder("logs", "q.talk", "-n", "3", "--agent", agent.url)
        assert code == 0, err
        assert (out, err) == ("out 7\nout 8\nout 9\n", "")
        code, out, err = await run_herder("logs", "q.talk", "--agent", agent.url)
        assert code == 0, err
        assert out.splitlines() == [f"out {i}" for i in range(10)]
        assert err.splitlines() == ["err"]

        code, out, err = await run_herder("rm", "q.talk", "--agent", agent.url)
        assert code == 0, err
        assert out.splitlines() == [out.strip()]
        assert out.startswith("q.talk: deleted")


async def test_rm_json_prints_the_document(agent: Agent) -> None:
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        made = await client.post(
            "/create-process", json={"app": "q", "node": "s", "command": ["sleep", "60"]}
        )
        assert made.status_code == 201
    code, out, err = await run_herder("--agent", agent.url, "rm", "q.s", "--json")
    assert code == 0, err
    assert json.loads(out)["slug"] == "q.s"


@pytest.mark.parametrize(
    "argv",
    [
        ["logs", "nobody.here"],
        ["status", "nobody.here"],
        ["rm", "nobody.here"],
        ["logs", "nobody.here", "-f"],
    ],
)
async def test_an_unknown_slug_is_one_line(agent: Agent, argv: list[str]) -> None:
    code, out, err = await run_herder(*argv, "--agent", agent.url)
    assert code == 1
    assert out == ""
    assert err.splitlines() == ["herder: 404: no process with slug 'nobody.here' (field: slug)"]


async def test_an_agent_out_of_reach_is_one_line() -> None:
    for argv in (["ps"], ["logs", "a.b"], ["tasks", "ls"]):
        code, _, err = await run_herder(
            *argv,
            env={
                **os.environ,
                "HERDER_AGENT_URL": "http://127.0.0.1:9",
                "HERDER_MANAGER_URL": "http://127.0.0.1:9",
            },
        )
        assert code == 1
        assert len(err.splitlines()) == 1
        assert err.startswith("herder: cannot ")


async def test_stop_start_restart(agent: Agent) -> None:
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        made = await client.post(
            "/create-process", json={"app": "q", "node": "s", "command": ["sleep", "60"]}
        )
        assert made.status_code == 201
        first_pid = (await client.get("/process-status/q.s")).json()["pid"]
    code, out, err = await run_herder("--agent", agent.url, "stop", "q.s")
    assert code == 0, err
    assert out == "q.s: stopped (state stopped, pid -)\n"
    code, out, err = await run_herder("stop", "q.s", "--agent", agent.url)
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("herder: 409: ")
    code, out, err = await run_herder("start", "q.s", "--agent", agent.url, "--json")
    assert code == 0, err
    assert json.loads(out)["state"] in ("starting", "running")
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        started = await wait_http(client, "/process-status/q.s", lambda d: d["state"] == "running")
    assert started["pid"] != first_pid
    code, out, err = await run_herder("restart", "q.s", "--agent", agent.url)
    assert code == 0, err
    assert out.startswith("q.s: restarted (state ")
    assert f"pid {started['pid']})" not in out


async def test_top_options_reach_the_commands_typer_runs(agent: Agent) -> None:
    code, out, err = await run_herder("--agent", agent.url, "pools", "ls", "--json")
    assert code == 0, err
    assert json.loads(out) == {"pools": []}
    code, out, err = await run_herder("--agent", agent.url, "pools", "show", "nothere")
    assert code == 1
    assert err.splitlines() == [err.strip()]
    assert err.startswith("herder: 404: ")
    # The quick path's parse refused, the tree's too: the same usage error either way.
    code, _, err = await run_herder("--agent", agent.url, "ps", "--no-such-option")
    assert code == 2
    assert "No such option" in err


async def test_a_token_file_before_or_after_the_command(make_agent: AgentFactory, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-s3cret-s3cret-s3cret\n")
    async with make_agent(auth_token="s3cret-s3cret-s3cret-s3cret") as agent:
        for argv in (
            ["--token-file", str(token), "ps", "--agent", agent.url],
            ["ps", "--agent", agent.url, "--token-file", str(token)],
            ["--token-file", str(token), "--agent", agent.url, "logs", "nobody.here"],
            ["--token-file", str(token), "--agent", agent.url, "pools", "ls"],
        ):
            code, out, err = await run_herder(*argv)
            assert (code, err) in (
                (0, ""),
                (1, "herder: 404: no process with slug 'nobody.here' (field: slug)\n"),
            )
        code, out, err = await run_herder("ps", "--agent", agent.url)
        assert code == 1
        assert out == ""
        assert err.startswith("herder: 401: ")
        assert len(err.splitlines()) == 1
        code, _, err = await run_herder("ps", "--agent", agent.url, "--token-file", str(tmp_path / "none"))
        assert code == 1
        assert err.startswith("herder: cannot read the token file ")
