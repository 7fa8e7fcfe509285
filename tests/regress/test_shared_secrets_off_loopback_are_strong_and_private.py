"""#12 §4: off loopback, a short shared secret or a token file others can read was taken.

The manager and the agent listening off loopback on a shared secret now refuse one
shorter than 32 bytes at start, and refuse a secret file that group or others may read
(on loopback, such a file is only warned about), as they refuse no auth at all.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from herder.agent import Agent, AgentConfig
from herder.agent.errors import ConfigError
from herder.manager.config import ManagerConfig
from herder.manager.server import Manager, ManagerError
from tests.helpers import HERDER

SHORT = "s3cret-of-31-bytes-xxxxxxxxxxxx"
STRONG = "a-shared-secret-of-forty-bytes-xxxxxxxxx"


async def test_the_manager_refuses_a_short_secret_off_loopback(tmp_path: Path) -> None:
    assert len(SHORT.encode()) == 31
    with pytest.raises(ManagerError, match="32 bytes"):
        async with Manager(ManagerConfig(host="0.0.0.0", port=0, data_dir=tmp_path, auth_token=SHORT)):
            pass


async def test_the_agent_refuses_a_short_secret_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        async with Agent(AgentConfig(host="0.0.0.0", port=0, data_dir=tmp_path, auth_token=SHORT)):
            pass


@pytest.mark.parametrize("command", ["manager", "agent"])
def test_a_secret_file_others_can_read_is_refused_off_loopback(tmp_path: Path, command: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text(STRONG + "\n")
    secret.chmod(0o644)
    done = subprocess.run(
        [
            HERDER,
            command,
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
            "--auth-token-file",
            str(secret),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert str(secret) in done.stderr, done.stderr
    assert "chmod 600" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
