"""#12 §5: a ``close_session`` whose connection drops mid-close still ends the session.

The client asks to close, and its connection goes away while the host is still
stopping its programs (one of them ignores SIGTERM, so the host's close takes a while).
Before, the close was the request's own coroutine: cancelled with the connection, it
left the session ``closing`` for ever, its programs running, ``resume_session`` and
``close_session`` contradicting each other, and the agent's stop waiting on it for
ever. Now the close belongs to the agent, and the agent's stop is bounded.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from herder.client import Agent as Client
from herder.client import Session
from herder.rpc import RemoteError
from herder.rpc.errors import ConnectionLost
from tests.conftest import AgentFactory
from tests.helpers import AgentProcess, pid_alive, poll, wait_dead
from tests.test_sessions import session_config

# The agent waits this long for the host's close, then kills what is left.
GRACE_S = 1.0
# A stop that is not held by any session: the grace, the sweep, and some slack.
STOP_BOUND_S = GRACE_S + 5.0
STUBBORN = ["sh", "-c", "trap '' TERM; echo ready; sleep 60"]


async def _state(watcher: Client, session_id: str) -> str | None:
    states = {s["id"]: s["state"] for s in await watcher.sessions()}
    return states.get(session_id)


async def _close_then_drop(client: Client, watcher: Client, session: Session) -> None:
    """Send ``close_session``; once the agent is closing the session, drop the connection."""
    closing = asyncio.ensure_future(session.close())
    await poll(lambda: _is_closing(watcher, session.id), timeout_s=10)
    assert not closing.done()  # the close is in progress: this is the window
    await client.__aexit__(None, None, None)
    await asyncio.wait({closing}, timeout=5)  # its answer never comes: the connection is gone
    assert closing.done()
    assert isinstance(closing.exception(), ConnectionLost)


async def _is_closing(watcher: Client, session_id: str) -> bool:
    return await _state(watcher, session_id) == "closing"


async def _launch_stubborn(session: Session) -> int:
    p = await session.proc.launch(STUBBORN)
    async for line in p.output:  # the trap is set once it speaks
        assert str(line) == "ready"
        break
    pid: int = p.pid
    return pid


async def test_a_dropped_close_still_ends_the_session(make_agent: AgentFactory) -> None:
    async with make_agent(**session_config(close_grace_s=GRACE_S)) as agent, Client(agent.url) as watcher:
        client = Client(agent.url)
        await client.__aenter__()
        session = await client.open_session("shell")
        pid = await _launch_stubborn(session)
        await _close_then_drop(client, watcher, session)

        await poll(lambda: _gone(watcher, session.id), timeout_s=STOP_BOUND_S)
        await wait_dead([pid], timeout_s=STOP_BOUND_S)
        # resume and close agree: the session has ended, and they say why.
        with pytest.raises(RemoteError, match=rf"session {session.id} has ended: closed by its client"):
            await watcher.resume(session.id, session.resume_token)
        with pytest.raises(RemoteError, match=rf"session {session.id} has ended: closed by its client"):
            await watcher.peer.call("close_session", session.id, target="meta")
        started = time.monotonic()
        agent.request_stop()
        await asyncio.wait_for(agent.wait_stopped(), STOP_BOUND_S)
        assert time.monotonic() - started < STOP_BOUND_S


async def _gone(watcher: Client, session_id: str) -> bool:
    return await _state(watcher, session_id) is None


async def test_the_agent_stops_during_a_dropped_close(make_agent: AgentFactory) -> None:
    async with make_agent(**session_config(close_grace_s=GRACE_S)) as agent:
        async with Client(agent.url) as watcher:
            client = Client(agent.url)
            await client.__aenter__()
            session = await client.open_session("shell")
            pid = await _launch_stubborn(session)
            host_pid = next(s["pid"] for s in await watcher.sessions() if s["id"] == session.id)
            await _close_then_drop(client, watcher, session)
        started = time.monotonic()
        agent.request_stop()
        await asyncio.wait_for(agent.wait_stopped(), STOP_BOUND_S)
        assert time.monotonic() - started < STOP_BOUND_S
    await wait_dead([pid, host_pid])
    assert not pid_alive(pid)


async def test_sigint_stops_the_real_agent_after_a_dropped_close(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f"[sessions]\nclose_grace_s = {GRACE_S}\n")
    agent = AgentProcess(tmp_path / "data", "--config", str(config)).start()
    try:
        async with Client(agent.url) as watcher:
            client = Client(agent.url)
            await client.__aenter__()
            session = await client.open_session("shell")
            pid = await _launch_stubborn(session)
            await _close_then_drop(client, watcher, session)
        agent.signal(signal.SIGINT)
        started = time.monotonic()
        code = await asyncio.to_thread(agent.wait, STOP_BOUND_S)
        assert time.monotonic() - started < STOP_BOUND_S
        assert code == 0, agent.stderr()
        await wait_dead([pid])
    finally:
        agent.kill()
