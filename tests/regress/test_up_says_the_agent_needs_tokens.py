"""#12 §6: ``herder up`` with keys says what is true of its agent.

On a data dir with keys, ``herder up`` logged "the agent runs open (loopback only)" while
its agent, linked with a key, in fact took only the manager's access tokens. The start-up
lines now say that both need tokens, and the agent does refuse a request without one.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from herder.auth import init_keys
from tests.helpers import HERDER, pid_alive


async def test_up_with_keys_says_the_agent_needs_tokens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init_keys(data)
    err_path = tmp_path / "up.stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [
                *(HERDER, "up", "--data-dir", str(data), "--db", f"sqlite:///{tmp_path / 'm.db'}"),
                *("--agent-port", "0", "--manager-port", "0"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        match = None
        while match is None and time.monotonic() < deadline and proc.poll() is None:
            match = re.search(r"agent on (http://\S+)", err_path.read_text())
            await asyncio.sleep(0.05)
        assert match is not None, err_path.read_text()
        said = err_path.read_text()
        assert "runs open" not in said, said
        assert "the manager and the agent need access tokens" in said, said
        async with httpx.AsyncClient(base_url=match.group(1), timeout=30) as agent:
            while (answer := await agent.get("/list-processes")).status_code == 503:  # keys not yet known
                assert time.monotonic() < deadline, answer.text
                await asyncio.sleep(0.05)
            assert answer.status_code == 401, answer.text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert not pid_alive(proc.pid)
