"""Helpers for tests that drive real processes: waiting with deadlines, pids, the binary."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from herder.agent.processes.supervisor import Unit

HERDER = str(Path(sys.executable).with_name("herder"))
# Polling an HTTP state needs a pause between polls; this is it (not a wait for time
# to pass: every loop below also has a deadline).
POLL_S = 0.02


async def run_herder(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 60.0
) -> tuple[int, str, str]:
    """Run the real ``herder`` binary with ``args`` without blocking this loop (an agent or
    manager under test may run in it); (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        HERDER,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def wait_http(
    client: httpx.AsyncClient,
    url: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """GET ``url`` until ``predicate(doc)`` holds; return the document."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(url)
        doc: dict[str, Any] = response.json()
        if response.status_code == 200 and predicate(doc):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never satisfied the condition; last: {doc}")
        await asyncio.sleep(POLL_S)


async def wait_unit(unit: Unit, predicate: Callable[[Unit], bool], timeout_s: float = 10.0) -> Unit:
    await unit.wait_for(predicate, timeout_s)
    return unit


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def keepers_of(agent_pid: int) -> list[int]:
    """The live keepers of the agent in process ``agent_pid``: its children with
    ``herder-keeper`` in their command line. Only this agent's: other agents (other tests'
    at the same time) keep theirs."""
    found = []
    for task in os.listdir(f"/proc/{agent_pid}/task"):
        with open(f"/proc/{agent_pid}/task/{task}/children") as fh:
            for pid in fh.read().split():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                        if b"herder-keeper" in cmd.read() and pid_alive(int(pid)):
                            found.append(int(pid))
                except OSError:
                    continue
    return found


async def wait_dead(pids: list[int], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            alive = [p for p in pids if pid_alive(p)]
            raise AssertionError(f"processes still alive: {alive}")
        await asyncio.sleep(POLL_S)


async def poll(check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until ``check()`` is true (it may be async), with a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(POLL_S)


def wait_banner(
    proc: subprocess.Popen[bytes], stderr_path: Path, pattern: str, timeout_s: float
) -> re.Match[str] | None:
    """The first match of ``pattern`` in a starting daemon's stderr file; None if it exited
    or ``timeout_s`` passed first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        match = re.search(pattern, stderr_path.read_text(errors="replace"))
        if match:
            return match
        time.sleep(POLL_S)
    return None


class AgentProcess:
    """The real ``herder agent`` binary on an ephemeral port; stopped by pid.

    Its stderr goes to a file (a pipe nobody drains would block the agent's logging);
    ``start()`` waits for the banner line there.
    """

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        data_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = data_dir.parent / f"agent-{id(self)}.stderr"

    def start(self, timeout_s: float = 20.0) -> AgentProcess:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    HERDER,
                    "agent",
                    "--port",
                    "0",
                    "--data-dir",
                    str(self.data_dir),
                    "--grace",
                    "2",
                    *self.args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        match = wait_banner(self.proc, self.stderr_path, r"herder agent listening on (http://\S+)", timeout_s)
        if match:
            self.url = match.group(1)
            return self
        self.kill()
        raise AssertionError("agent did not start:\n" + self.stderr())

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        """Stop it for good if a test left it running (SIGKILL: the keeper cleans up)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


class UpProcess:
    """The real ``herder up`` (a manager and its agent in one process) on ephemeral ports.

    ``start()`` waits for the line naming both URLs; ``stop()`` sends SIGINT and waits,
    then SIGKILLs what did not stop: by pid, always.
    """

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.manager_url = ""
        self.agent_url = ""
        self.stderr_path = data_dir.parent / f"up-{id(self)}.stderr"

    def start(self, timeout_s: float = 30.0) -> UpProcess:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    *(HERDER, "up", "--data-dir", str(self.data_dir)),
                    *("--agent-port", "0", "--manager-port", "0"),
                    *self.args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        match = wait_banner(
            self.proc, self.stderr_path, r"manager on (https?://\S+), agent on (https?://\S+)", timeout_s
        )
        if match:
            self.manager_url, self.agent_url = match.groups()
            return self
        self.stop()
        raise AssertionError("herder up did not start:\n" + self.stderr())

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGINT, then SIGKILL past ``timeout_s``; the exit status (None if it was killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            return None
