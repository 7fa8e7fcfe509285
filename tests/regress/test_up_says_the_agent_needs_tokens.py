"""#12 §6: ``herder up`` with keys says what is true of its agent.

On a data dir with keys, ``herder up`` logged "the agent runs open (loopback only)" while
its agent, linked with a key, in fact took only the manager's access tokens. The start-up
lines now say that both need tokens, and the agent does refuse a request without one.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from herder.auth import init_keys
from tests.helpers import UpProcess, pid_alive


async def test_up_with_keys_says_the_agent_needs_tokens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init_keys(data)
    up = UpProcess(data, "--db", f"sqlite:///{tmp_path / 'm.db'}").start()
    try:
        said = up.stderr()
        assert "runs open" not in said, said
        assert "the manager and the agent need access tokens" in said, said
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=up.agent_url, timeout=30) as agent:
            while (answer := await agent.get("/list-processes")).status_code == 503:  # keys not yet known
                assert time.monotonic() < deadline, answer.text
                await asyncio.sleep(0.05)
            assert answer.status_code == 401, answer.text
        assert up.stop() == 0
    finally:
        up.stop()
    assert not pid_alive(up.pid)
