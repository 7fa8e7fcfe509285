"""Three managers, six agents and their load, in a network of namespaces (#17's chaos suite).

The fleet is real processes: ``herder manager`` in namespaces m1..m3 (one PostgreSQL
database, reached through ``proxy.Route`` s that can go silent), ``herder agent`` in
namespaces a1..a6, each given all three managers' URLs. The test (in the root namespace)
talks to each manager through a forwarder from the "t" namespace. Every process is
stopped by its pid (``ip netns exec`` execs, so the pid is the daemon's own).

The load (``Load``) submits tasks round-robin through the managers and registers
services through them; what was acknowledged is recorded, and ``Checks`` says after a
run what the suite promises (docs/operations.md, "Chaos suite").
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import itertools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from herder.rpc.client import connect
from tests.chaos.netns import Network
from tests.chaos.proxy import Relay, Route
from tests.helpers import HERDER, poll

MANAGER_PORT = 8020
ATTEMPT = str(Path(__file__).with_name("attempt.py"))
SERVICE_URL = "http://192.0.2.10:8080/"  # TEST-NET-1: allowed by the proxy, never resolved
START_S = 60.0  # a loaded machine (CI runs three test workers on two cores) starts a daemon slowly
REQUEST_S = 3.0  # a request to a manager cut off gets no answer: given up after this
POLL_S = 0.05  # between polls of a state; every loop that polls also has a deadline


def _epoch(ts: str) -> float:
    """A JSON log line's ``ts`` (UTC, milliseconds) as Unix seconds."""
    return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float(ts[19:-1] or 0)


class Daemon:
    """One herder process in a namespace; its stderr (JSON lines) in a file."""

    def __init__(self, name: str, argv: list[str], stderr_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.stderr_path = stderr_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False  # SIGSTOPped

    def start(self, banner: str, timeout_s: float = START_S) -> None:
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if banner in self.stderr_path.read_text(errors="replace").split("\n#start\n")[-1]:
                # ``ip netns exec`` execs the daemon: the pid the test signals is its own.
                with open(f"/proc/{self.proc.pid}/cmdline", "rb") as cmdline:
                    assert b"herder" in cmdline.read().split(b"\0")[1], "not the daemon's own pid"
                return
            time.sleep(POLL_S)
        text = self.stderr_path.read_text(errors="replace")[-3000:]
        self.kill()
        raise AssertionError(f"{self.name} did not start:\n{text}")

    def mark(self) -> None:
        """A separator in the stderr file: ``start`` looks for the banner after it."""
        with open(self.stderr_path, "a") as err:
            err.write("\n#start\n")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, sig)
            self.stopped = sig == signal.SIGSTOP

    def kill(self) -> None:
        """SIGKILL by pid (a stopped process too) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.stopped = False

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.stderr_path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(raw))
        return found


@dataclass
class ManagerNode:
    name: str
    address: str
    daemon: Daemon
    pg: Route  # its PostgreSQL cable
    api: str = ""  # its HTTP API as the test reaches it (a forwarder on 127.0.0.1)

    @property
    def url(self) -> str:
        """Its URL on the namespaces' network (what agents are given)."""
        return f"http://{self.address}:{MANAGER_PORT}"

    def start(self) -> None:
        self.daemon.mark()
        self.daemon.start("herder manager listening on")


@dataclass
class Link:
    """An agent's link event from its log."""

    at: float  # Unix seconds
    linked: bool  # True: "linked to the manager"; False: "link to the manager ... trying"
    url: str


@dataclass
class AgentNode:
    name: str
    host: str
    daemon: Daemon

    def links(self) -> list[Link]:
        events = []
        for line in self.daemon.lines():
            message = str(line.get("message", ""))
            if m := re.match(r"linked to the manager (\S+) as worker", message):
                events.append(Link(_epoch(line["ts"]), True, m.group(1)))
            elif m := re.match(r"link to the manager (\S+): ", message):
                events.append(Link(_epoch(line["ts"]), False, m.group(1)))
        return events

    def manager(self) -> str | None:
        """The manager it is linked to now (None: none)."""
        links = self.links()
        return links[-1].url if links and links[-1].linked else None

    def relinked_after(self, t: float) -> float | None:
        """When it was next linked to a manager after ``t`` (None: not yet)."""
        return next((e.at for e in self.links() if e.linked and e.at > t), None)


@dataclass
class Gap:
    """An agent without a manager: from a fault on its link to its next link."""

    agent: str
    fault: str
    began: float
    ended: float | None
    bound_s: float

    @property
    def seconds(self) -> float:
        return (self.ended if self.ended is not None else time.time()) - self.began


class Fleet:
    """Three managers and six agents on one database, in ``net``; ``close`` stops them all."""

    def __init__(
        self,
        net: Network,
        relay: Relay,
        work: Path,
        db_url: str,
        heartbeat_s: float,
        target: tuple[str, int] = ("127.0.0.1", 5432),
        managers: int = 3,
        agents: int = 6,
    ) -> None:
        self.net = net
        self.relay = relay
        self.work = work
        self.heartbeat_s = heartbeat_s
        self.db_url = db_url  # as the managers name it: through their cable
        self.timings: dict[str, float] = {}
        self.token = secrets.token_urlsafe(32)
        self.token_file = work / "token"
        self.token_file.write_text(self.token)
        self.token_file.chmod(0o600)
        self.attempts = work / "attempts"
        self.attempts.mkdir()
        self.attempts.chmod(0o777)
        net.add_host("t")  # the test's side of the forwarders
        self.managers: list[ManagerNode] = []
        for i in range(1, managers + 1):
            name = f"m{i}"
            address = net.add_host(name)
            pg = relay.route(net.ns(name), ("127.0.0.1", 5432), target)
            argv = net.command(
                name,
                [
                    *(
                        HERDER,
                        "--log-format",
                        "json",
                        "manager",
                        "--host",
                        address,
                        "--port",
                        str(MANAGER_PORT),
                    ),
                    *(
                        "--data-dir",
                        str(work / name),
                        "--db",
                        db_url,
                        "--auth-token-file",
                        str(self.token_file),
                    ),
                    *("--heartbeat-interval", str(heartbeat_s)),
                ],
            )
            daemon = Daemon(name, argv, work / f"{name}.stderr")
            node = ManagerNode(name, address, daemon, pg)
            api = relay.route(None, ("127.0.0.1", 0), (address, MANAGER_PORT), target_ns=net.ns("t"))
            node.api = f"http://127.0.0.1:{api.address[1]}"
            self.managers.append(node)
        self.agents: list[AgentNode] = []
        urls = ",".join(m.url for m in self.managers)
        for i in range(1, agents + 1):
            name = f"a{i}"
            net.add_host(name)
            argv = net.command(
                name,
                [
                    *(HERDER, "--log-format", "json", "agent", "--port", "0", "--data-dir", str(work / name)),
                    *("--grace", "1", "--manager", urls, "--manager-token-file", str(self.token_file)),
                    *("--name", f"chaos-{name}", "--slots", "2"),
                ],
            )
            self.agents.append(AgentNode(name, name, Daemon(name, argv, work / f"{name}.stderr")))

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def manager_of(self, url: str) -> ManagerNode:
        return next(m for m in self.managers if m.url == url)

    async def start(self) -> None:
        """The managers at once (their migrations take turns), then the agents; all linked."""
        began = time.monotonic()
        await asyncio.gather(*(asyncio.to_thread(m.start) for m in self.managers))
        self.timings["managers_up_s"] = time.monotonic() - began
        await asyncio.gather(
            *(asyncio.to_thread(a.daemon.start, "herder agent listening on") for a in self.agents)
        )
        await until(lambda: all(a.manager() for a in self.agents), START_S, "every agent linked")
        self.timings["fleet_up_s"] = time.monotonic() - began

    def close(self) -> None:
        for daemon in [*(a.daemon for a in self.agents), *(m.daemon for m in self.managers)]:
            with contextlib.suppress(Exception):
                daemon.kill()

    def client(self, m: ManagerNode) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=m.api, headers=self.headers, timeout=REQUEST_S)

    def linked_to(self, m: ManagerNode) -> list[AgentNode]:
        return [a for a in self.agents if a.manager() == m.url]


async def until(check: Any, timeout_s: float, what: str) -> None:
    """``poll`` that names what was not reached (a chaos run waits on many things)."""
    try:
        await poll(check, timeout_s)
    except AssertionError:
        raise AssertionError(f"not reached within {timeout_s} s: {what}") from None


@dataclass
class Load:
    """Tasks and registrations sent round-robin through the managers while faults happen."""

    fleet: Fleet
    work_s: float  # each attempt's run
    task_every_s: float
    service_every_s: float
    max_attempts: int = 10
    submitted: int = 0
    acked_tasks: dict[int, str] = field(default_factory=dict)  # task id -> its key
    acked_services: dict[str, float] = field(default_factory=dict)  # key -> when acknowledged
    acked_via: dict[str, str] = field(default_factory=dict)  # key -> the manager that did
    refused: list[str] = field(default_factory=list)  # answers other than 202 (not timeouts)

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._tasks(stop))
            tg.create_task(self._services(stop))

    async def _tasks(self, stop: asyncio.Event) -> None:
        clients = [self.fleet.client(m) for m in self.fleet.managers]
        try:
            async with asyncio.TaskGroup() as tg:
                n = 0
                while not stop.is_set():
                    n += 1
                    tg.create_task(self._submit(clients[n % len(clients)], n))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.task_every_s)
        finally:
            for c in clients:
                await c.aclose()

    async def _submit(self, client: httpx.AsyncClient, n: int) -> None:
        key = f"t{n}"
        argv = [sys.executable, "-I", ATTEMPT, str(self.fleet.attempts), key, str(self.work_s)]
        body = {
            "type": "command",
            "settings": {"argv": argv},
            "max_attempts": self.max_attempts,
            "task_id": n,
        }
        self.submitted += 1
        try:
            answer = await client.post("/tasks", json=body)
        except httpx.HTTPError:
            return  # no answer: not acknowledged (it may exist: the checks read every task)
        if answer.status_code == 202:
            self.acked_tasks[answer.json()["id"]] = key
        else:
            self.refused.append(f"{answer.status_code} {answer.text[:200]}")

    async def _services(self, stop: asyncio.Event) -> None:
        n = 0
        async with asyncio.TaskGroup() as tg:
            while not stop.is_set():
                n += 1
                m = self.fleet.managers[n % len(self.fleet.managers)]
                tg.create_task(self._register(m, n))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.service_every_s)

    async def _register(self, m: ManagerNode, n: int) -> None:
        key = f"/chaos/prod/svc/1.0.0/eu/h{n}/svc-{n}"
        rpc = m.api.replace("http://", "ws://") + "/rpc"
        try:
            async with asyncio.timeout(REQUEST_S):
                async with connect(rpc, token=self.fleet.token) as peer:
                    await peer.call("register_service", key, SERVICE_URL, {"n": n}, 3600)
        except Exception:  # no answer (or a refusal): not acknowledged
            return
        self.acked_services[key] = time.time()
        self.acked_via[key] = m.name


async def all_tasks(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every task in the database, through one manager's ``GET /tasks`` pages."""
    found: list[dict[str, Any]] = []
    before: int | None = None
    for _ in range(1000):  # pages of 500: bounded
        params: dict[str, Any] = {"limit": 500, **({"before": before} if before else {})}
        answer = await client.get("/tasks", params=params)
        answer.raise_for_status()
        page = answer.json()
        found.extend(page["tasks"])
        before = page["next"]
        if before is None:
            return found
    raise AssertionError("GET /tasks never ended")


async def service_keys(client: httpx.AsyncClient) -> set[str]:
    answer = await client.get("/services", params={"query": "/chaos", "limit": 10000})
    answer.raise_for_status()
    return {s["key"] for s in answer.json()["services"]}


def attempts_log(fleet: Fleet) -> list[tuple[str, str, int, float]]:
    path = fleet.attempts / "attempts.log"
    if not path.exists():
        return []
    rows = []
    for raw in path.read_text().splitlines():
        word, key, pid, at = raw.split()[:4]  # then the attempt's network namespace
        rows.append((word, key, int(pid), float(at)))
    return rows


def overlaps(rows: list[tuple[str, str, int, float]]) -> list[str]:
    """Every sign of two attempts of one item alive at once: OVERLAP lines, and start/end
    intervals of one key that cross (an attempt killed has no end: it is left out)."""
    found = [f"{key}: OVERLAP (pid {pid})" for word, key, pid, _ in rows if word == "OVERLAP"]
    spans: dict[str, dict[int, list[float]]] = {}
    for word, key, pid, at in rows:
        if word in ("start", "end"):
            spans.setdefault(key, {}).setdefault(pid, []).append(at)
    for key, by_pid in spans.items():
        closed = sorted((v[0], v[1]) for v in by_pid.values() if len(v) == 2)
        for (_, end), (start, _) in itertools.pairwise(closed):
            if start < end:
                found.append(f"{key}: an attempt started at {start:.3f} before another ended at {end:.3f}")
    return found


__all__ = [
    "AgentNode",
    "Daemon",
    "Fleet",
    "Gap",
    "Load",
    "ManagerNode",
    "all_tasks",
    "attempts_log",
    "overlaps",
    "service_keys",
    "until",
]
