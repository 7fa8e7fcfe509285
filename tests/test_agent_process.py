"""The real ``herder agent`` binary: signals, SIGKILL without orphans, restore, refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import HERDER, AgentProcess, keepers_of, pid_alive, poll, wait_dead, wait_http

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


async def create(url: str, node: str, argv: list[str]) -> dict:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/create-process", json={"app": "bin", "node": node, "command": argv})
        assert response.status_code == 201, response.text
        return await wait_http(client, response.json()["details"], lambda d: d["pid"] is not None)


async def test_sigkill_leaves_no_descendant(data_dir: Path, tmp_path: Path) -> None:
    """A three-level tree whose last level left the group dies with a SIGKILLed agent."""
    agent = AgentProcess(data_dir).start()
    try:
        pids_file = tmp_path / "pids"
        await create(agent.url, "tree.0", [sys.executable, str(FIXTURES / "tree.py"), str(pids_file)])
        await create(agent.url, "plain.0", ["sleep", "1000"])
        await poll(lambda: pids_file.exists())
        tree = [int(p) for p in pids_file.read_text().split()]
        assert len(tree) == 3
        assert all(pid_alive(p) for p in tree)
        agent.signal(signal.SIGKILL)
        agent.wait()
        await wait_dead(tree, timeout_s=10)
    finally:
        agent.kill()


async def test_restarted_agent_kills_what_its_predecessor_left(data_dir: Path, tmp_path: Path) -> None:
    """Even with the keeper killed too, the next agent on the data dir sweeps the leftovers."""
    first = AgentProcess(data_dir, "--no-restore").start()
    try:
        status = await create(first.url, "orphan.0", ["sleep", "1000"])
        first.signal(signal.SIGSTOP)  # or it would start another keeper at once
        for pid in keepers_of(first.pid):
            os.kill(pid, signal.SIGKILL)
        first.signal(signal.SIGKILL)
        first.wait()
        assert pid_alive(status["pid"])  # nobody is left to clean up... until the next start
    finally:
        first.kill()
    second = AgentProcess(data_dir, "--no-restore").start()
    try:
        await wait_dead([status["pid"]], timeout_s=5)
    finally:
        second.signal(signal.SIGTERM)
        assert second.wait() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_graceful_stop_then_restore(data_dir: Path, sig: signal.Signals) -> None:
    agent = AgentProcess(data_dir).start()
    try:
        one = await create(agent.url, "one.0", ["sleep", "1000"])
        two = await create(agent.url, "two.0", ["sleep", "1000"])
        agent.signal(sig)
        assert agent.wait() == 0
        assert not pid_alive(one["pid"])
        assert not pid_alive(two["pid"])
    finally:
        agent.kill()
    again = AgentProcess(data_dir).start()
    try:
        async with httpx.AsyncClient(base_url=again.url) as client:
            listing = (await client.get("/list-processes")).json()["processes"]
            assert sorted(p["slug"] for p in listing) == ["bin.one.0", "bin.two.0"]
            for slug in ("bin.one.0", "bin.two.0"):
                doc = await wait_http(client, f"/process-status/{slug}", lambda d: d["state"] == "running")
                assert pid_alive(doc["pid"])
            # A deleted process stays deleted across restarts.
            assert (await client.post("/delete-process/bin.two.0", content="{}")).status_code == 200
        again.signal(signal.SIGTERM)
        assert again.wait() == 0
    finally:
        again.kill()
    third = AgentProcess(data_dir, "--no-restore").start()
    try:
        async with httpx.AsyncClient(base_url=third.url) as client:
            assert (await client.get("/list-processes")).json() == {"processes": []}
    finally:
        third.signal(signal.SIGTERM)
        assert third.wait() == 0
    fourth = AgentProcess(data_dir).start()
    try:
        async with httpx.AsyncClient(base_url=fourth.url) as client:
            listing = (await client.get("/list-processes")).json()["processes"]
            assert [p["slug"] for p in listing] == ["bin.one.0"]
    finally:
        fourth.signal(signal.SIGTERM)
        assert fourth.wait() == 0


def test_second_agent_on_the_same_data_dir_is_refused(data_dir: Path) -> None:
    agent = AgentProcess(data_dir).start()
    try:
        result = subprocess.run(
            [HERDER, "agent", "--port", "0", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2
        assert "in use by another agent" in result.stderr
        assert str(agent.pid) in result.stderr
    finally:
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0


def test_off_loopback_without_auth_is_refused(data_dir: Path) -> None:
    result = subprocess.run(
        [HERDER, "agent", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "requires auth" in result.stderr


def test_version_and_help() -> None:
    version = subprocess.run([HERDER, "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0
    assert version.stdout.startswith("herder ")
    for command in (
        [],
        ["agent"],
        ["run"],
        ["ps"],
        ["status"],
        ["logs"],
        ["rm"],
        ["pools"],
        ["pools", "create"],
        ["host"],
        ["manager"],
        ["tasks"],
        ["tasks", "submit"],
        ["workers"],
    ):
        result = subprocess.run([HERDER, *command, "--help"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout


def test_json_log_format_goes_to_stderr(data_dir: Path) -> None:
    import json

    result = subprocess.run(
        [HERDER, "--log-format", "json", "agent", "--host", "0.0.0.0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    proc = subprocess.Popen(
        [HERDER, "--log-format", "json", "agent", "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        doc = json.loads(first)
        assert {"ts", "level", "logger", "message"} <= doc.keys()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
