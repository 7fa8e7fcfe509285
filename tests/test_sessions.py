"""Sessions (issue 5): host processes behind the agent, reached over the wire protocol.

The product used here, ``testkit``, is a third party's: it lives in
``tests/fixtures/product_pkg`` (a package with its ``.dist-info``), found by its entry
points because the agent puts that directory on the host processes' ``PYTHONPATH``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from herder.agent import Agent
from herder.client import Agent as Client
from herder.client import SessionEnded
from herder.rpc import RemoteError
from tests.conftest import AgentFactory
from tests.helpers import HERDER, pid_alive, wait_dead

PRODUCT_PATH = str(Path(__file__).parent / "fixtures" / "product_pkg")


def session_config(**sessions: Any) -> dict[str, Any]:
    return {"sessions": {"env": {"PYTHONPATH": PRODUCT_PATH}, **sessions}}


@pytest.fixture
async def agent(make_agent: AgentFactory) -> AsyncIterator[Agent]:
    async with make_agent(**session_config(), protocol_port=0) as running:
        yield running


async def until(check: Any, timeout_s: float = 10.0) -> None:
    """Poll an async condition with a deadline."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.02)


async def test_the_index_links_the_protocol(agent: Agent) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        index = (await http.get(agent.url + "/")).json()
    assert index["rpc"] == agent.rpc_url
    async with Client(index["rpc"]) as client:
        assert await client.ping() == "pong"


async def test_open_use_close_leaves_nothing(agent: Agent) -> None:
    async with Client(agent.url) as client:
        async with client.session("testkit") as s:
            echo = s.ext("echo")
            answer = await echo.say("hi", target="kwargs named like call options pass through")
            assert answer["text"] == "hi"
            assert answer["session"] == s.id
            assert answer["extra"] == {"target": "kwargs named like call options pass through"}
            host_pid = answer["pid"]
            sleepers = [await echo.spawn_sleeper(), await echo.spawn_sleeper(detach=True)]
            assert all(pid_alive(p) for p in sleepers)
            assert s.extensions == {"echo": sorted(s.extensions["echo"])}
        assert await s.ended in ("closed by this client", "closed by its client")
        await wait_dead([host_pid, *sleepers])
        assert await client.sessions() == []


async def test_the_host_is_isolated(agent: Agent) -> None:
    async with Client(agent.url) as client, client.session("testkit") as s:
        seen = await s.ext("echo").whoami()
    assert Path(seen["cwd"]) == agent.config.data_dir.resolve() / "sessions" / s.id
    assert seen["pgid"] == seen["pid"] == seen["sid"]  # its own session and group
    assert "HERDER_HOST_SECRET" not in seen["env"]
    assert "HERDER_HOST_FD" not in seen["env"]
    assert set(seen["env"]) <= {
        "PATH", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "SHELL", "VIRTUAL_ENV", "HOME", "TMPDIR",
        "PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "HERDER_SESSION", "HERDER_HOST_CONFINED",
        "HERDER_AGENT_ID", "HERDER_UNIT",
    }  # fmt: skip


async def test_events_callbacks_and_remote_errors(agent: Agent) -> None:
    async with Client(agent.url) as client, client.session("testkit") as s:
        echo = s.ext("echo")
        assert await echo.call_back(lambda i: i * 10, 3) == [0, 10, 20]
        with pytest.raises(RemoteError) as caught:
            await echo.fail("boom")
        assert caught.value.type == "ValueError"
        assert caught.value.message == "boom"
        with pytest.raises(RemoteError, match="unknown_method"):
            await echo.nonexistent()


async def test_over_tcp_on_the_protocol_port(agent: Agent) -> None:
    assert agent.protocol_url is not None
    async with Client(agent.protocol_url) as client, client.session("testkit") as s:
        assert (await s.ext("echo").say("tcp"))["text"] == "tcp"
        info = await client.info()
        assert info["sessions"] == 1
        assert "testkit" not in info["products"]  # the agent's own environment lacks it


async def test_unknown_product_is_a_clear_error(agent: Agent) -> None:
    async with Client(agent.url) as client:
        with pytest.raises(RemoteError, match="no product 'nosuch' is installed"):
            await client.open_session("nosuch")
        assert await client.sessions() == []


async def test_a_session_belongs_to_its_connection_until_resumed(agent: Agent) -> None:
    async with Client(agent.url) as owner, Client(agent.url) as other:
        s = await owner.open_session("testkit")
        with pytest.raises(RemoteError, match="not attached to this connection"):
            await other.peer.call_with("echo.say", ["x"], {}, target=s.id)
        with pytest.raises(RemoteError, match="wrong resume token"):
            await other.resume(s.id, "not-the-token")
        taken = await other.resume(s.id, s.resume_token)
        assert (await taken.ext("echo").say("mine now"))["text"] == "mine now"
        with pytest.raises(RemoteError, match="not attached to this connection"):
            await s.ext("echo").say("not yours")
        await taken.close()


async def test_disconnect_then_resume_gets_the_events_sent_meanwhile(agent: Agent) -> None:
    async with Client(agent.url) as first:
        s = await first.open_session("testkit")
        await s.ext("echo").emit_later(5, 0.1)
    # The connection is gone (unexpectedly, for the agent): the host's events are kept.
    async with Client(agent.url) as watcher:

        async def buffered() -> bool:
            sessions = await watcher.sessions()
            return len(sessions) == 1 and sessions[0]["buffered"] == 5 and not sessions[0]["attached"]

        await until(buffered)
    async with Client(agent.url) as second:
        resumed = await second.resume(s.id, s.resume_token)
        received = [await asyncio.wait_for(resumed.events.get(), 10) for _ in range(5)]
        assert [e["kind"] for e in received] == ["testkit.tick"] * 5
        assert [e["data"]["i"] for e in received] == [0, 1, 2, 3, 4]
        assert [e["seq"] for e in received] == sorted(e["seq"] for e in received)
        assert (await resumed.ext("echo").say("back"))["text"] == "back"
        await resumed.close()


async def test_overflow_while_away_is_reported(make_agent: AgentFactory) -> None:
    async with make_agent(**session_config(buffer_events=3)) as agent:
        async with Client(agent.url) as first:
            s = await first.open_session("testkit")
            await s.ext("echo").emit_later(10, 0.05)
        async with Client(agent.url) as watcher:
            await until(lambda: _buffered(watcher, 3))  # all 10 were emitted at once
        async with Client(agent.url) as second:
            resumed = await second.resume(s.id, s.resume_token)
            received = [await asyncio.wait_for(resumed.events.get(), 10) for _ in range(4)]
            assert resumed.dropped_events == 7
        assert received[0]["kind"] == "overflow"
        assert received[0]["data"] == {"dropped": 7}
        assert [e["data"]["i"] for e in received[1:]] == [7, 8, 9]


async def _buffered(client: Client, count: int) -> bool:
    sessions = await client.sessions()
    return bool(sessions) and sessions[0]["buffered"] == count


async def test_resume_after_the_window_fails_clearly(make_agent: AgentFactory) -> None:
    async with make_agent(**session_config(reconnect_window_s=0.3)) as agent:
        async with Client(agent.url) as first:
            s = await first.open_session("testkit")
            host_pid = (await s.ext("echo").say("x"))["pid"]
        async with Client(agent.url) as second:
            await until(lambda: _no_sessions(second))
            with pytest.raises(RemoteError, match=r"has ended: no client came back within 0.3 s"):
                await second.resume(s.id, s.resume_token)
    await wait_dead([host_pid])


async def _no_sessions(client: Client) -> bool:
    return await client.sessions() == []


async def test_idle_timeout_ends_a_detached_session(make_agent: AgentFactory) -> None:
    async with make_agent(**session_config(idle_timeout_s=0.3)) as agent, Client(agent.url) as client:
        s = await client.open_session("testkit")
        sleeper = await s.ext("echo").spawn_sleeper(detach=True)
        await s.detach()
        await until(lambda: _no_sessions(client))
        await wait_dead([sleeper])
        with pytest.raises(RemoteError, match=r"no client came back within 0\.3 s"):
            await client.resume(s.id, s.resume_token)


async def test_a_host_crash_ends_the_session_and_kills_what_it_launched(agent: Agent) -> None:
    async with Client(agent.url) as client:
        s = await client.open_session("testkit")
        echo = s.ext("echo")
        sleeper = await echo.spawn_sleeper(detach=True)  # in its own session: outside the host's group
        with pytest.raises(RemoteError, match="has ended: its host process crashed"):
            await echo.crash()
        reason = await asyncio.wait_for(s.ended, 10)
        assert "crashed" in reason
        await wait_dead([sleeper])
        with pytest.raises(SessionEnded):
            await echo.say("anyone?")


async def test_stopping_the_agent_ends_every_session(make_agent: AgentFactory) -> None:
    async with make_agent(**session_config()) as agent, Client(agent.url) as client:
        s = await client.open_session("testkit")
        pids = [(await s.ext("echo").say("x"))["pid"], await s.ext("echo").spawn_sleeper(detach=True)]
    await wait_dead(pids)


def test_herder_host_run_by_hand_refuses(tmp_path: Path) -> None:
    for argv in ([HERDER, "host", "shell"], [sys.executable, "-m", "herder.agent.sessions.host", "shell"]):
        env = {**os.environ, "HERDER_HOST_FD": "0", "HERDER_HOST_SECRET": "guess"}  # fd 0 is no socket
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path)
        assert result.returncode == 2
        assert "cannot be run by hand" in result.stderr


async def test_the_shell_product_through_the_sdk(agent: Agent) -> None:
    async with Client(agent.url) as client, client.session("shell") as s:
        assert await s.fs.write("hello.txt", b"hi there") == 8
        assert await s.fs.read("hello.txt") == b"hi there"
        assert [e["name"] for e in await s.fs.list(".")] == ["hello.txt"]
        p = await s.proc.launch(["sh", "-c", "cat hello.txt; echo; echo oops >&2; exit 3"])
        lines = [(line.stream, str(line)) async for line in p.output]
        assert ("stdout", "hi there") in lines
        assert ("stderr", "oops") in lines
        assert await p.wait() == 3


async def test_a_path_escape_through_fs_is_refused(agent: Agent, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    async with Client(agent.url) as client, client.session("shell") as s:
        for path in ("../secret.txt", str(secret), "../../../../../../etc/passwd"):
            with pytest.raises(RemoteError, match="outside the session's directory") as caught:
                await s.fs.read(path)
            assert caught.value.type == "PermissionError"
        os.symlink(tmp_path, Path(s.root) / "escape")
        with pytest.raises(RemoteError, match="outside the session's directory"):
            await s.fs.read("escape/secret.txt")
        with pytest.raises(RemoteError, match="outside the session's directory"):
            await s.fs.write("../planted.txt", b"x")
    assert not (tmp_path / "planted.txt").exists()


async def test_close_stops_programs_and_their_exits_still_arrive(agent: Agent) -> None:
    async with Client(agent.url) as client:
        s = await client.open_session("shell")
        p = await s.proc.launch(["sleep", "60"])
        assert pid_alive(p.pid)
        await s.close()
        assert await asyncio.wait_for(p.wait(), 10) < 0  # ended by a signal, and told so
        await wait_dead([p.pid])


async def test_a_burst_of_output_arrives_whole_with_its_exit(agent: Agent) -> None:
    async with Client(agent.url) as client, client.session("shell") as s:
        p = await s.proc.launch(["seq", "1", "5000"])
        lines = [str(line) async for line in p.output]
        assert lines == [str(i) for i in range(1, 5001)]
        assert await asyncio.wait_for(p.wait(), 10) == 0


async def test_launched_programs_do_not_inherit_the_channel(agent: Agent) -> None:
    script = 'for fd in /proc/$$/fd/*; do echo "self $(readlink $fd)"; done; '
    script += 'for fd in /proc/$PPID/fd/*; do echo "host $(readlink $fd)"; done'
    async with Client(agent.url) as client, client.session("shell") as s:
        p = await s.proc.launch(["sh", "-c", script])
        lines = [str(line).split(" ", 1) for line in [line async for line in p.output]]
    mine = {target for who, target in lines if who == "self" and target.startswith("socket:")}
    hosts = {target for who, target in lines if who == "host" and target.startswith("socket:")}
    assert hosts  # the host's channel, at least
    assert not mine & hosts  # no socket of the host's (its channel to the agent) reached the program


async def test_the_largest_file_call_fits_in_a_frame(agent: Agent) -> None:
    data = os.urandom(8 * 1024 * 1024)
    async with Client(agent.url) as client, client.session("shell") as s:
        assert await s.fs.write("big.bin", data) == len(data)
        assert await s.fs.read("big.bin") == data
        handle = await s.fs.open("big.bin", "r")
        assert await s.fs.read(handle) == data  # a default-size read fits too
        await s.fs.close(handle)


async def test_meta_methods_lists_the_session_methods(agent: Agent) -> None:
    async with Client(agent.url) as client:
        described = await client.peer.call("methods", target="meta")
    names = {m["name"] for m in described if m.get("target") == "meta"}
    assert {"open_session", "resume_session", "close_session", "detach_session", "list_sessions"} <= names


async def test_the_sdk_notices_a_lost_connection(make_agent: AgentFactory) -> None:
    async with make_agent(**session_config()) as agent:
        client = Client(agent.url)
        await client.__aenter__()
        s = await client.open_session("shell")
        p = await s.proc.launch(["sleep", "60"])
    # The agent stopped: the session ended with it, and the SDK says so.
    reason = await asyncio.wait_for(s.ended, 10)
    assert reason
    with pytest.raises((SessionEnded, RemoteError)):
        await asyncio.wait_for(p.wait(), 10)
    await client.__aexit__(None, None, None)


async def test_a_stuck_session_does_not_hold_the_agents_stop(
    make_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Its product never finishes closing and its host never exits of itself: past
    # close_grace_s (and the slack, none here) the stop cuts its end short.
    async with make_agent(**session_config(close_grace_s=1.0)) as agent, Client(agent.url) as client:
        s = await client.open_session("testkit")
        echo = s.ext("echo")
        pids = [(await echo.say("x"))["pid"], await echo.spawn_sleeper(detach=True)]
        await echo.hang_on_close()
        assert agent.runtime is not None
        assert agent.runtime.sessions is not None
        agent.runtime.sessions.shutdown_slack_s = 0.0
        agent.request_stop()
        await asyncio.wait_for(agent.wait_stopped(), 10)
    assert "still under way at the agent's stop; cut short" in caplog.text
    await wait_dead(pids)
