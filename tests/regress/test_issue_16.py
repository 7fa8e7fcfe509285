"""Issue 16, the first hour: what a newcomer met before the tour worked.

Each test starts the real ``herder`` binary and waits for a line on its stderr or an
HTTP answer, with a deadline; every process is stopped by pid.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from herder import __version__
from tests.helpers import HERDER, wait_banner

START_S = 30.0  # a daemon's start on a loaded machine
STOP_S = 30.0


@contextmanager
def daemon(stderr: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``herder ARGS`` in the background, its stderr in a file; SIGTERM by pid at the end."""
    with open(stderr, "wb") as err:
        proc = subprocess.Popen([HERDER, *args], stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_S)


def url_of(proc: subprocess.Popen[bytes], stderr: Path, daemon_name: str) -> str:
    found = wait_banner(proc, stderr, rf"herder {daemon_name} listening on (http://[\d.:]+)", START_S)
    assert found, stderr.read_text()
    return found.group(1)


@pytest.mark.parametrize("command", ["agent", "manager"])
def test_the_daemons_take_version_as_the_program_does(command: str) -> None:
    done = subprocess.run([HERDER, command, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"herder {__version__}"


JSON_DAEMONS = {
    "agent": (["agent", "--port", "0"], "herder agent listening on http://"),
    "manager": (["manager", "--port", "0"], "herder manager listening on http://"),
    "up": (["up", "--agent-port", "0", "--manager-port", "0"], "herder up: manager on http://"),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(JSON_DAEMONS))
def test_json_logs_are_json_on_every_line(command: str, tmp_path: Path) -> None:
    """The banner a person reads becomes a log record: a collector parses every line."""
    args, banner = JSON_DAEMONS[command]
    stderr = tmp_path / "stderr"
    with daemon(stderr, "--log-format", "json", *args, "--data-dir", str(tmp_path / "data")) as proc:
        found = wait_banner(proc, stderr, re.escape(banner), START_S)
        assert found, stderr.read_text()
    lines = [line for line in stderr.read_text().splitlines() if line.strip()]
    for line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not JSON: {line!r}")
    messages = [json.loads(line)["message"] for line in lines]
    assert any(m.startswith(banner) for m in messages)


@pytest.mark.parametrize("command", ["agent", "manager"])
def test_a_bad_config_file_is_one_line_per_problem_naming_key_and_file(command: str, tmp_path: Path) -> None:
    config = tmp_path / "herder.toml"
    config.write_text('port = "abc"\nno_such_key = 1\n')
    done = subprocess.run(
        [HERDER, command, "--config", str(config), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    port_line = next(line for line in lines if ": port: " in line)
    assert port_line.startswith(f"herder {command}: {config}: port: ")
    assert "'abc'" in port_line
    unknown = next(line for line in lines if "no_such_key" in line)
    assert f"{config}: no_such_key: unknown key" in unknown
    assert "pydantic.dev" not in done.stderr
    assert "validation error" not in done.stderr
    # A file that is not TOML: one line, the file and where it breaks.
    config.write_text("port = \n")
    done = subprocess.run(
        [HERDER, command, "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"herder {command}: {config}: not valid TOML: Invalid value (at line 1, column 8)"
    )


@pytest.mark.slow
def test_the_manager_index_links_its_parts(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    with daemon(stderr, "manager", "--port", "0", "--data-dir", str(tmp_path / "data")) as proc:
        url = url_of(proc, stderr, "manager")
        answer = httpx.get(f"{url}/", timeout=10)
        assert answer.status_code == 200, answer.text
        index = answer.json()
        ws = "ws" + url.removeprefix("http")
        assert index["workers"] == f"{url}/workers"
        assert index["tasks"] == f"{url}/tasks"
        assert index["rpc"] == f"{ws}/rpc"
        for name, link in index.items():
            if link.startswith("http"):
                assert httpx.get(link, timeout=10).status_code == 200, name


@pytest.mark.slow
def test_an_agent_linked_with_a_key_does_not_say_it_runs_open(tmp_path: Path) -> None:
    data = tmp_path / "manager"
    key = tmp_path / "agent.key"
    for args in (
        ["keys", "init", "--data-dir", str(data)],
        ["keys", "issue", "--user", "farm", "--role", "admin", "--data-dir", str(data), "--out", str(key)],
    ):
        done = subprocess.run([HERDER, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    m_err, a_err = tmp_path / "manager.stderr", tmp_path / "agent.stderr"
    with daemon(m_err, "manager", "--port", "0", "--data-dir", str(data)) as manager:
        manager_url = url_of(manager, m_err, "manager")
        agent_args = ["agent", "--port", "0", "--data-dir", str(tmp_path / "agent"), "--no-restore"]
        with daemon(a_err, *agent_args, "--manager", manager_url, "--key-file", str(key)) as agent:
            agent_url = url_of(agent, a_err, "agent")
            assert httpx.get(f"{agent_url}/", timeout=10).status_code in (401, 503)
            text = a_err.read_text()
    assert "anyone on this host can use the agent" not in text
    assert re.search(rf"keys on: requests need an access token of the manager {manager_url}", text), text


@pytest.mark.slow
def test_a_second_agent_under_the_same_name_is_told_to_take_another(tmp_path: Path) -> None:
    """Two agents on one host without --name: the first keeps its link, the second is
    refused with a line naming the clash and --name (they used to knock each other off,
    saying only that the WebSocket closed)."""
    m_err, first_err, second_err = (tmp_path / f"{n}.stderr" for n in ("manager", "first", "second"))
    with daemon(m_err, "manager", "--port", "0", "--data-dir", str(tmp_path / "m")) as manager:
        manager_url = url_of(manager, m_err, "manager")

        def agent_args(name: str) -> list[str]:
            return [
                "agent",
                "--port",
                "0",
                "--data-dir",
                str(tmp_path / name),
                "--no-restore",
                "--manager",
                manager_url,
            ]

        with daemon(first_err, *agent_args("first")) as first:
            first_url = url_of(first, first_err, "agent")
            assert wait_banner(first, first_err, r"linked to the manager", START_S), first_err.read_text()
            with daemon(second_err, *agent_args("second")) as second:
                refused = wait_banner(second, second_err, r"link to the manager .*--name.*", START_S)
                assert refused, second_err.read_text()
                assert "linked already" in refused.group(0)
                workers = httpx.get(f"{manager_url}/workers", timeout=10).json()
                assert [w["agent_url"] for w in workers.values()] == [first_url]
                assert "link to the manager" not in first_err.read_text(), first_err.read_text()
