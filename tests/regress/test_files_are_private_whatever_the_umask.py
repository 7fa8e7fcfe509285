"""#12 §4: the manager's database, keys and tokens, and the agent's logs, took the umask's modes.

Under ``umask 000`` the data dir was 0777 and ``manager.db`` 0666: anyone on the host could
read every task's command and environment, or write the database; the agent's data dir
and its processes' logs were as open. Whatever the umask, they are now 0700
(directories) and 0600 (files); ``public.pem`` alone is meant to be read (0644).
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from herder.auth import init_keys
from herder.manager.config import ManagerConfig
from herder.manager.server import Manager
from tests.conftest import AgentFactory
from tests.helpers import HERDER


def under_umask(umask: int, *argv: str) -> list[str]:
    return ["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh", *argv]


def mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


@pytest.mark.parametrize("umask", [0o022, 0o000])
async def test_the_data_dir_database_keys_and_tokens_are_private(tmp_path: Path, umask: int) -> None:
    data_dir = tmp_path / "data" / "manager"
    key_file = tmp_path / "alice.key"
    key_file.write_text("old\n")
    key_file.chmod(0o644)  # --out over an existing, readable file
    previous = os.umask(umask)
    try:
        init_keys(data_dir)
        async with Manager(ManagerConfig(port=0, data_dir=data_dir)):
            pass
    finally:
        os.umask(previous)
    issue = ["keys", "issue", "--user", "alice", "--out", str(key_file), "--data-dir", str(data_dir)]
    issued = subprocess.run(
        under_umask(umask, HERDER, *issue), capture_output=True, text=True, timeout=60, check=False
    )
    assert issued.returncode == 0, issued.stderr
    found = {
        "data dir": mode(data_dir),
        "keys": mode(data_dir / "keys"),
        "signing.pem": mode(data_dir / "keys" / "signing.pem"),
        "public.pem": mode(data_dir / "keys" / "public.pem"),
        "key file": mode(key_file),
    }
    for path in data_dir.glob("manager.db*"):
        found[path.name] = mode(path)
    assert "manager.db" in found
    expected = {name: "0700" if name in ("data dir", "keys") else "0600" for name in found}
    expected["public.pem"] = "0644"
    assert found == expected


async def test_the_agents_data_dir_and_logs_are_private(make_agent: AgentFactory, tmp_path: Path) -> None:
    """A process's output may hold anything it prints: its log files are its owner's alone."""
    data_dir = tmp_path / "agent"
    previous = os.umask(0o000)
    try:
        async with make_agent(data_dir=data_dir) as agent, httpx.AsyncClient(base_url=agent.url) as client:
            body = {
                "app": "umask",
                "node": "p.0",
                "command": "echo secret; echo oops >&2",
                "restart": "never",
            }
            assert (await client.post("/create-process", json=body)).status_code == 201
            logs = [data_dir / "logs" / "umask.p.0.out.log", data_dir / "logs" / "umask.p.0.err.log"]
            deadline = time.monotonic() + 10
            while not all(log.exists() and log.stat().st_size for log in logs):
                assert time.monotonic() < deadline, "the process's output never reached its logs"
                await asyncio.sleep(0.02)
    finally:
        os.umask(previous)
    assert {"data dir": mode(data_dir), **{log.name: mode(log) for log in logs}} == {
        "data dir": "0700",
        "umask.p.0.out.log": "0600",
        "umask.p.0.err.log": "0600",
    }
