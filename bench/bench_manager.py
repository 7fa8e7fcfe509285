"""Benchmark 9 (issue 6): the manager: trivial tasks end to end through local agents, and heartbeats.

Real binaries only: ``herder manager --port 0`` (its URL from its "listening on" line) and
``herder agent --port 0 --manager URL --slots N`` (each with a data dir of its own and a
worker name of its own), on SQLite (the default, in the manager's data dir) and on
PostgreSQL (a fresh database per phase, ``herder_bench_<random>_<phase>``, dropped after).
In the same run, for each database:

1. **Tasks end to end.** 5,000 tasks ``{"type": "command", "settings": {"argv":
   ["true"]}}`` (1,000 with ``--quick``) through 4 linked agents (``--slots 4`` each:
   16 pieces of work at once), submitted as fast as a client can: ``POST /tasks``, 16 at
   once on 16 keep-alive connections (a lean raw HTTP/1.1 client, requests built
   beforehand). Clock from the first submission until the last task is ``completed``:
   the largest ``updated_at`` of the completed tasks (the manager's clock, the same
   machine's). ``GET /tasks`` answers at most the 1,000 newest tasks and there is no count,
   so completion is watched with ``GET /tasks/{id}`` of the last task submitted every
   0.2 s; once it is completed, ``GET /tasks?status=`` of every unfinished status must
   be empty (and of ``failed``, ``canceled``), and the end is read from the 1,000 newest
   completed ones (work runs in order of id: the last to end is among them). Beside it,
   the **raw spawn rate** of this machine measured just before and just after, in the
   same run: this process spawning ``true`` 5,000 times (1,000) with asyncio, output on
   pipes read to the end as a worker captures it, as many at once as the agents run
   (16); the better of the two is the reference (the machine is shared: what other
   programs took meanwhile is reported). Goal (#6, and #19 on both databases): tasks/s ≥ 40%
   of that. The CPU every process took over the run, also per task (the measure that holds
   on a shared machine: the goal needs herder's CPU per task within 2.5 times what one raw
   spawn costs this process and its child). Also the
   **submission rate**: ``POST /tasks`` per second while the agents work (in that run),
   and **alone** (1,000 more, 500 with ``--quick``, once the agents are stopped, on the
   same database), with p50/p99 of a POST.
2. **Heartbeats of 1,000 workers** (200 with ``--quick``): a fresh manager (``--heartbeat-
   interval 1``, pinned to CPU 0: "on one core") and simulated workers in one client
   process (``manager_workers.py``, pinned to CPU 1, ``--clients`` to spread them): each
   is a real link, ``connect(ws://…/rpc, codecs=("msgpack",))``, ``register``, then
   ``heartbeat(worker_id, figures, [])`` once a second, the beats spread evenly over the
   second. After 2 s of warm-up (1 s), every beat sent in a 15 s window (5 s) is timed as
   the client sees it: p50, p90, p99. The manager's CPU (every thread, from
   ``/proc/PID/task/*/schedstat``) over the same window, as a share of one core and per
   beat; the client's own CPU beside it (a client that is itself saturated would stretch
   the round trips: it says so). Goal: p99 ≤ 50 ms on one core.

Everything listens on 127.0.0.1 (the kernel picks the ports); every process is stopped
by its pid (SIGTERM, then SIGKILL after a deadline; children the agents should have
reaped are killed if still there); every wait has a deadline; the temporary directory and
the PostgreSQL databases are removed. PostgreSQL is reached at ``--pg-url`` (default
``$HERDER_BENCH_PG_URL`` or ``postgresql://postgres@127.0.0.1:5432/test``, an existing
database used only to create and drop the benchmark's own); without it the benchmark
stops naming the URL (``--no-postgres`` runs SQLite alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import harness
from daemons import http_get
from harness import BENCH_DIR, REPO, VENV_BIN, Deadline, Figure, cpu_seconds, machine_busy_seconds, percentile

TASKS = 5000
TASKS_QUICK = 1000
AGENTS = 4
SLOTS = 4
SUBMIT_CONCURRENCY = 16
SUBMIT_ALONE = 1000
SUBMIT_ALONE_QUICK = 500
POLL_S = 0.2
SIM_WORKERS = 1000
SIM_WORKERS_QUICK = 200
BEAT_SECONDS = 15.0
BEAT_SECONDS_QUICK = 5.0
BEAT_WARMUP_S = 2.0
BEAT_WARMUP_S_QUICK = 1.0
CLIENTS = 1  # processes driving the simulated workers
MANAGER_CPU = 0
CLIENT_CPU = 1
SPAWN_GOAL = 0.40  # tasks/s end to end ≥ 40% of the raw spawn rate
P99_GOAL_MS = 50.0
START_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 600.0  # one end-to-end run, or one submission run (~150 s here today)
BEATS_TIMEOUT_S = 180.0  # linking the workers, the beats, their results
PG_URL = os.environ.get("HERDER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TRUE = shutil.which("true") or "/bin/true"
WORKERS_SCRIPT = BENCH_DIR / "manager_workers.py"
UNFINISHED = ("queued", "assigned", "rendering", "paused", "failed", "canceled")
PARTS = ("tasks", "beats")
DB_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


# -- /proc --------------------------------------------------------------------------------


def children_cpu_seconds(pid: int) -> float:
    """CPU time of the children ``pid`` has waited for (``cutime + cstime``, in ticks)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> dict[int, float]:
    """CPU time so far of every PostgreSQL server process (``comm`` is ``postgres``), by pid."""
    out: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() != "postgres":
                        continue
            except OSError:
                continue
            out[int(entry)] = cpu_seconds(int(entry))
    return out


def postgres_since(before: dict[int, float]) -> float:
    """CPU the PostgreSQL server took since ``before`` (processes started since: all of theirs)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in postgres_cpu().items())


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of ``pid`` (threads it starts later inherit it) to ``cpu``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), {cpu})


# -- PostgreSQL ---------------------------------------------------------------------------


class NoPostgres(RuntimeError):
    """PostgreSQL is not reachable at the URL given: the message names it."""


async def _pg_admin(admin_url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def pg_create(admin_url: str, phase: str) -> tuple[str, str]:
    """A fresh database next to ``admin_url``'s: (its name, its URL)."""
    name = f"herder_bench_{secrets.token_hex(4)}_{phase}"
    try:
        asyncio.run(_pg_admin(admin_url, f'CREATE DATABASE "{name}"'))
    except (OSError, ImportError) as exc:
        raise NoPostgres(
            f"benchmark 9 needs PostgreSQL at {admin_url} (--pg-url or HERDER_BENCH_PG_URL; "
            f"--no-postgres for SQLite alone): {exc}"
        ) from exc
    parts = urlsplit(admin_url)
    return name, f"{parts.scheme}://{parts.netloc}/{name}"


def pg_drop(admin_url: str, name: str) -> None:
    try:
        asyncio.run(_pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except Exception as exc:  # reported, the benchmark's figures stand
        harness.progress(f"manager: could not drop the database {name}: {exc}")


# -- the manager and its agents -----------------------------------------------------------


def wait_line(log_path: Path, pattern: re.Pattern[str], proc: subprocess.Popen[bytes], what: str) -> str:
    deadline = Deadline(START_TIMEOUT_S, f"{what} start")
    while not (match := pattern.search(log_path.read_text(errors="replace"))):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log_path.read_text(errors='replace')[-2000:]}")
        deadline.check()
        time.sleep(0.005)
    return match.group(1)


class ManagerProc:
    """``herder manager --port 0`` with a data dir of its own, on SQLite or a PostgreSQL URL."""

    _LISTENING = re.compile(r"herder manager listening on (http://127\.0\.0\.1:\d+)")

    def __init__(self, work: Path, name: str, db_url: str | None, heartbeat_interval_s: float) -> None:
        self.data_dir = work / name
        self.log_path = work / f"{name}.log"
        self.db_url = db_url
        self.heartbeat_interval_s = heartbeat_interval_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self) -> None:
        argv: list[str | Path] = [VENV_BIN / "herder", "manager", "--host", "127.0.0.1", "--port", "0"]
        argv += ["--data-dir", self.data_dir, "--heartbeat-interval", str(self.heartbeat_interval_s)]
        if self.db_url is not None:
            argv += ["--db", self.db_url]
        self.proc = harness.start(argv, log_path=self.log_path)
        self.url = wait_line(self.log_path, self._LISTENING, self.proc, "herder manager")

    def stop(self) -> None:
        if self.proc is not None:
            harness.stop(self.proc, signal.SIGTERM, timeout_s=30)


class LinkedAgent:
    """``herder agent --port 0 --manager URL --slots N``, a worker named ``bench-agent-I``.

    The name comes from a config file: four agents on one host would otherwise all
    register under the host's name, and each would take the worker over from the last.
    """

    _LISTENING = re.compile(r"herder agent listening on (http://127\.0\.0\.1:\d+)")

    def __init__(self, work: Path, index: int, manager_url: str, slots: int) -> None:
        self.name = f"bench-agent-{index}"
        self.data_dir = work / self.name
        self.log_path = work / f"{self.name}.log"
        self.config = work / f"{self.name}.toml"
        self.manager_url = manager_url
        self.slots = slots
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.config.write_text(f'[manager]\nname = "{self.name}"\n')
        argv: list[str | Path] = [VENV_BIN / "herder", "agent", "--host", "127.0.0.1", "--port", "0"]
        argv += ["--data-dir", self.data_dir, "--no-restore", "--config", self.config]
        argv += ["--manager", self.manager_url, "--slots", str(self.slots)]
        self.proc = harness.start(argv, log_path=self.log_path)
        wait_line(self.log_path, self._LISTENING, self.proc, f"herder agent {self.name}")

    def stop(self) -> None:
        if self.proc is None:
            return
        below = harness.descendants(self.pid)
        harness.stop(self.proc, signal.SIGTERM, timeout_s=30)
        killed = harness.kill_leftovers(below, "true")
        if killed:
            harness.progress(f"manager: {killed} process(es) outlived {self.name}: killed")


def wait_linked(manager: ManagerProc, names: Sequence[str]) -> None:
    """Until ``GET /workers`` lists every name online (the agents registered over their link)."""
    deadline = Deadline(START_TIMEOUT_S, "agents linking to the manager")
    while True:
        status, body = http_get("127.0.0.1", manager.port, "/workers")
        workers = json.loads(body) if status == 200 else {}
        if all(workers.get(n, {}).get("connection") == "online" for n in names):
            return
        deadline.check()
        time.sleep(0.05)


def compile_bytecode() -> None:
    """What ``make bench`` does first: herder's modules compiled."""
    subprocess.run(
        [VENV_BIN / "python", "-m", "compileall", "-q", REPO / "src" / "herder"],
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )


# -- a lean HTTP/1.1 client ---------------------------------------------------------------

_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


class Http:
    """One keep-alive connection; requests built by the caller, answers framed by length.

    Not httpx: on a 2-core machine every millisecond the client burns is taken from the
    manager, the agents or the work (see "httpx" in README.md).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Http:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    def post_bytes(self, path: str, body: bytes) -> bytes:
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = _LENGTH.search(head)
        body = await self._reader.readexactly(int(length.group(1))) if length else b""
        return status, body

    async def get(self, path: str) -> Any:
        status, body = await self.send(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
        return json.loads(body)


@dataclass
class Submitted:
    first_s: float  # time.time() before the first POST
    last_s: float  # time.time() after the last answer
    ids: list[int]
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return len(self.ids) / (self.last_s - self.first_s)


async def submit(port: int, count: int, first_task_id: int, concurrency: int) -> Submitted:
    """``count`` tasks ``true``, ``concurrency`` POSTs at once on as many connections."""
    template = Http(port)
    requests = [
        template.post_bytes(
            "/tasks",
            json.dumps(
                {"type": "command", "settings": {"argv": ["true"]}, "task_id": first_task_id + i}
            ).encode(),
        )
        for i in range(count)
    ]
    requests.reverse()  # popped from the end: in order
    ids: list[int] = []
    latencies: list[float] = []

    async def connection(http: Http) -> None:
        clock = time.perf_counter
        while requests:
            request = requests.pop()
            t0 = clock()
            status, body = await http.send(request)
            latencies.append((clock() - t0) * 1e3)
            if status != 202:
                raise RuntimeError(f"POST /tasks: {status} {body[:300]!r}")
            ids.append(int(json.loads(body)["id"]))

    async with contextlib.AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(Http(port)) for _ in range(concurrency)]
        first = time.time()
        await asyncio.gather(*(connection(c) for c in conns))
        last = time.time()
    return Submitted(first, last, ids, latencies)


async def wait_completed(port: int, last_id: int, count: int) -> tuple[float, float]:
    """Until every task is completed; (the last completion's ``updated_at``, when it was seen).

    Raises if any task failed or was canceled.
    """
    async with Http(port) as http:
        while True:
            doc = await http.get(f"/tasks/{last_id}")
            if doc["status"] == "completed":
                left = {s: len((await http.get(f"/tasks?status={s}"))["tasks"]) for s in UNFINISHED}
                if left["failed"] or left["canceled"]:
                    failed = (await http.get("/tasks?status=failed"))["tasks"][:1]
                    raise RuntimeError(f"tasks ended badly: {left}; the first: {failed}")
                if not any(left.values()):
                    seen = time.time()
                    done = (await http.get("/tasks?status=completed"))["tasks"]
                    if len(done) != min(count, 1000):
                        raise RuntimeError(f"{len(done)} completed tasks listed, expected {min(count, 1000)}")
                    return max(t["updated_at"] for t in done), seen
            await asyncio.sleep(POLL_S)


# -- the raw spawn rate -------------------------------------------------------------------


async def spawn_many(count: int, concurrency: int) -> float:
    """Spawn ``true`` ``count`` times, ``concurrency`` at once, output read to the end; per second."""
    todo = iter(range(count))

    async def spawner() -> None:
        for _ in todo:
            proc = await asyncio.create_subprocess_exec(
                TRUE, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"{TRUE} exited with {proc.returncode}")

    t0 = time.perf_counter()
    async with asyncio.timeout(RUN_TIMEOUT_S):
        await asyncio.gather(*(spawner() for _ in range(concurrency)))
    return count / (time.perf_counter() - t0)


def spawn_reference(count: int, concurrency: int) -> tuple[float, float]:
    """(spawns per second, what other programs took meanwhile, in CPUs' worth)."""
    busy0, own0, t0 = machine_busy_seconds(), sum(os.times()[:4]), time.perf_counter()
    rate = asyncio.run(spawn_many(count, concurrency))
    wall = time.perf_counter() - t0
    others = (machine_busy_seconds() - busy0 - (sum(os.times()[:4]) - own0)) / wall
    harness.progress(
        f"manager: raw spawn rate {rate:,.0f}/s ({concurrency} at once; others took {max(0, others):.0%})"
    )
    return rate, max(0.0, others)


# -- 1: tasks end to end ------------------------------------------------------------------


@dataclass
class TaskRun:
    db: str
    tasks: int
    agents: int
    slots: int
    spawn_rate: float  # the raw spawn rate, same concurrency: the better of before and after
    seconds: float  # first submission to the last completion
    rate: float
    seen_after_s: float  # when the client saw it all done (polling), from the first submission
    submit_rate: float  # POST /tasks per second in this run (agents working)
    submit_p50_ms: float
    submit_p99_ms: float
    # busy share of one CPU over the run: manager, agents, work, client, postgres, others
    cpu: dict[str, float]
    alone_rate: float = 0.0  # POST /tasks per second with no agent linked
    alone_p50_ms: float = 0.0
    alone_p99_ms: float = 0.0
    alone_count: int = 0
    spawns: list[tuple[float, float]] = field(default_factory=list)  # (rate, others) before, after


def run_tasks(
    manager: ManagerProc, agents: Sequence[LinkedAgent], count: int, spawn_rate: float, db: str
) -> TaskRun:
    """Submit ``count`` tasks ``true`` and wait until all are completed; CPU of everyone meanwhile."""
    pids = {"manager": manager.pid, **{a.name: a.pid for a in agents}}
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    work0 = sum(children_cpu_seconds(a.pid) for a in agents)
    busy0, client0, pg0 = machine_busy_seconds(), time.process_time(), postgres_cpu()

    async def main() -> tuple[Submitted, float, float]:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            sub = await submit(manager.port, count, 1, SUBMIT_CONCURRENCY)
            harness.progress(f"manager: {DB_NAMES[db]}: {count} tasks submitted at {sub.rate:,.0f}/s")
            end, seen = await wait_completed(manager.port, max(sub.ids), count)
        return sub, end, seen

    sub, end, seen = asyncio.run(main())
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    wall = seen - sub.first_s
    shares = {
        "manager": cpu["manager"] / wall,
        "agents": sum(v for k, v in cpu.items() if k != "manager") / wall,
        "work": (sum(children_cpu_seconds(a.pid) for a in agents) - work0) / wall,
        "client": (time.process_time() - client0) / wall,
        "postgres": postgres_since(pg0) / wall,
    }
    shares["others"] = max(0.0, (machine_busy_seconds() - busy0) / wall - sum(shares.values()))
    seconds = end - sub.first_s
    return TaskRun(
        db=db,
        tasks=count,
        agents=len(agents),
        slots=agents[0].slots,
        spawn_rate=spawn_rate,
        seconds=seconds,
        rate=count / seconds,
        seen_after_s=wall,
        submit_rate=sub.rate,
        submit_p50_ms=percentile(sub.latencies_ms, 50),
        submit_p99_ms=percentile(sub.latencies_ms, 99),
        cpu=shares,
    )


def measure_tasks(work: Path, db: str, db_url: str | None, count: int, alone: int, slots: int) -> TaskRun:
    """The raw spawn rate, a manager, its agents, ``count`` tasks; the spawn rate again (the
    better is kept: the machine is shared); then submissions alone."""
    concurrency = AGENTS * slots
    before = spawn_reference(count, concurrency)
    manager = ManagerProc(work, f"manager-{db}-tasks", db_url, heartbeat_interval_s=1.0)
    agents: list[LinkedAgent] = []
    try:
        manager.start()
        (work / db).mkdir(exist_ok=True)
        agents = [LinkedAgent(work / db, i, manager.url, slots) for i in range(AGENTS)]
        for agent in agents:
            agent.start()
        wait_linked(manager, [a.name for a in agents])
        result = run_tasks(manager, agents, count, before[0], db)
        harness.progress(
            f"manager: {DB_NAMES[db]}: {count} tasks end to end at {result.rate:,.0f}/s "
            f"({result.rate / before[0]:.0%} of the raw spawn rate before), in {result.seconds:.1f} s"
        )
        for agent in agents:
            agent.stop()
        after = spawn_reference(count, concurrency)
        result.spawns = [before, after]
        result.spawn_rate = max(before[0], after[0])

        async def submit_alone() -> Submitted:
            async with asyncio.timeout(RUN_TIMEOUT_S):
                return await submit(manager.port, alone, count + 1, SUBMIT_CONCURRENCY)

        sub = asyncio.run(submit_alone())
        result.alone_count = alone
        result.alone_rate = sub.rate
        result.alone_p50_ms = percentile(sub.latencies_ms, 50)
        result.alone_p99_ms = percentile(sub.latencies_ms, 99)
        harness.progress(f"manager: {DB_NAMES[db]}: POST /tasks alone {sub.rate:,.0f}/s")
        return result
    finally:
        for agent in agents:
            agent.stop()
        manager.stop()


# -- 2: heartbeats ------------------------------------------------------------------------


@dataclass
class Beats:
    db: str
    workers: int
    clients: int
    seconds: float  # the window as the benchmark timed it (the manager's CPU)
    window_s: float  # the window the beats were sent in (the clients')
    beats: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    manager_busy: float  # share of its one CPU over the window
    manager_us_per_beat: float
    manager_rss_mib: float
    client_busy: list[float]  # each client process, share of one CPU
    postgres_busy: float  # the PostgreSQL server's processes (all of them), share of one CPU
    others_busy: float  # everything else on the machine
    connect_s: float
    late: int
    errors: int
    first_errors: list[str] = field(default_factory=list)


def read_doc(proc: subprocess.Popen[bytes], deadline: Deadline, what: str) -> dict[str, Any]:
    """One JSON line from a helper's stdout, within the deadline."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], deadline.remaining)
    line = proc.stdout.readline() if ready else b""
    if not line:
        raise RuntimeError(f"simulated workers ({what}): no answer (exit status {proc.poll()})")
    doc: dict[str, Any] = json.loads(line)
    return doc


def measure_beats(
    work: Path, db: str, db_url: str | None, workers: int, seconds: float, warmup: float, clients: int
) -> Beats:
    """A fresh manager pinned to one CPU; ``workers`` simulated workers heartbeating once a second."""
    pinned = (os.cpu_count() or 1) > 1
    manager = ManagerProc(work, f"manager-{db}-beats", db_url, heartbeat_interval_s=1.0)
    helpers: list[subprocess.Popen[bytes]] = []
    deadline = Deadline(BEATS_TIMEOUT_S, f"{workers} simulated workers on {DB_NAMES[db]}")
    try:
        manager.start()
        if pinned:
            pin(manager.pid, MANAGER_CPU)
        ws_url = "ws" + manager.url[4:] + "/rpc"
        share = -(-workers // clients)
        for c in range(clients):
            count = min(share, workers - c * share)
            argv: list[str | Path] = [VENV_BIN / "python", WORKERS_SCRIPT, "--url", ws_url]
            argv += ["--count", str(count), "--prefix", f"sim{c}", "--offset", str(c * share)]
            argv += ["--total", str(workers), "--warmup", str(warmup), "--seconds", str(seconds)]
            if pinned:
                argv += ["--cpu", str(CLIENT_CPU)]
            helpers.append(harness.start(argv, log_path=work / f"workers-{db}-{c}.log", pipes=True))
        connect_s = max(read_doc(h, deadline, "linking")["connect_s"] for h in helpers)
        harness.progress(f"manager: {DB_NAMES[db]}: {workers} simulated workers linked in {connect_s:.1f} s")
        for h in helpers:
            assert h.stdin is not None
            h.stdin.write(b"go\n")
            h.stdin.flush()
        time.sleep(warmup)
        cpu0, busy0, pg0 = cpu_seconds(manager.pid), machine_busy_seconds(), postgres_cpu()
        t0 = time.perf_counter()
        time.sleep(seconds)
        cpu, busy = cpu_seconds(manager.pid) - cpu0, machine_busy_seconds() - busy0
        pg = postgres_since(pg0)
        wall = time.perf_counter() - t0
        rss = harness.rss_bytes(manager.pid) / 2**20
        docs = [read_doc(h, deadline, "results") for h in helpers]
        for h in helpers:
            h.wait(timeout=max(1.0, deadline.remaining))
    finally:
        for h in helpers:
            harness.stop(h, signal.SIGTERM, timeout_s=10)
        manager.stop()
    latencies = [x / 1e3 for d in docs for x in d["latencies_us"]]
    if not latencies:
        raise RuntimeError(f"no heartbeat answered in the window: {[d['first_errors'] for d in docs]}")
    client_cpu = [d["cpu_s"] / d["seconds"] for d in docs]
    b = Beats(
        db=db,
        workers=workers,
        clients=clients,
        seconds=wall,
        window_s=seconds,
        beats=len(latencies),
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies),
        manager_busy=cpu / wall,
        manager_us_per_beat=cpu / max(1, len(latencies)) * seconds / wall * 1e6,
        manager_rss_mib=rss,
        client_busy=client_cpu,
        postgres_busy=pg / wall,
        others_busy=max(0.0, (busy - cpu - pg) / wall - sum(client_cpu)),
        connect_s=connect_s,
        late=sum(int(d["late"]) for d in docs),
        errors=sum(int(d["errors"]) for d in docs),
        first_errors=[e for d in docs for e in d["first_errors"]][:5],
    )
    harness.progress(
        f"manager: {DB_NAMES[db]}: {workers} workers heartbeating: p50 {b.p50_ms:.1f} ms, p99 "
        f"{b.p99_ms:.1f} ms, manager {b.manager_busy:.0%} of a CPU, client(s) "
        f"{' + '.join(f'{c:.0%}' for c in b.client_busy)}, errors {b.errors}"
    )
    return b


# -- the benchmark ------------------------------------------------------------------------


@dataclass
class Measured:
    quick: bool
    slots: int
    tasks: dict[str, TaskRun] = field(default_factory=dict)
    beats: dict[str, Beats] = field(default_factory=dict)


def measure(
    quick: bool = False,
    slots: int = SLOTS,
    clients: int = CLIENTS,
    postgres: bool = True,
    pg_url: str = PG_URL,
    parts: Sequence[str] = PARTS,
) -> Measured:
    count = TASKS_QUICK if quick else TASKS
    alone = SUBMIT_ALONE_QUICK if quick else SUBMIT_ALONE
    workers = SIM_WORKERS_QUICK if quick else SIM_WORKERS
    seconds = BEAT_SECONDS_QUICK if quick else BEAT_SECONDS
    warmup = BEAT_WARMUP_S_QUICK if quick else BEAT_WARMUP_S
    compile_bytecode()
    m = Measured(quick, slots)
    databases: dict[str, str] = {}  # name -> URL, created before anything is measured
    with tempfile.TemporaryDirectory(prefix="herder-bench-manager-") as tmp:
        work = Path(tmp)
        try:
            for part in parts if postgres else ():
                name, url = pg_create(pg_url, part)
                databases[name] = url
            for db in ("sqlite", "postgresql") if postgres else ("sqlite",):
                for part in parts:
                    url = None
                    if db == "postgresql":
                        url = next(u for n, u in databases.items() if n.endswith(f"_{part}"))
                    if part == "tasks":
                        m.tasks[db] = measure_tasks(work, db, url, count, alone, slots)
                    else:
                        m.beats[db] = measure_beats(work, db, url, workers, seconds, warmup, clients)
        finally:
            for name in databases:
                pg_drop(pg_url, name)
    return m


CPU_PER_TASK_KEYS = ("manager", "agents", "work", "postgres")


def cpu_per_task(t: TaskRun) -> str:
    """The CPU each part took per task over the run, in ms: manager / agents / work / postgres."""
    each = [t.cpu[k] * t.seen_after_s / t.tasks * 1e3 for k in CPU_PER_TASK_KEYS]
    return " / ".join(f"{ms:.1f}" for ms in each) + f" (all {sum(each):.1f})"


def figures(m: Measured) -> list[Figure]:
    common: dict[str, Any] = {"bench": "9", "supervisord": None, "circus": None}
    out: list[Figure] = []
    for db, t in m.tasks.items():
        name = DB_NAMES[db]
        share = t.rate / t.spawn_rate
        out.append(
            Figure(
                label=f"{t.tasks:,} `true` tasks through {t.agents} agents ({t.slots} slots each), {name}: "
                "end to end",
                unit="tasks/s",
                higher_is_better=True,
                herder=t.rate,
                reference=t.spawn_rate,
                reference_label=f"raw spawn rate, asyncio, {t.agents * t.slots} at once",
                goal=f"≥ {SPAWN_GOAL:.0%} of the raw spawn rate ({share:.0%})",
                met=share >= SPAWN_GOAL,
                note=(
                    f"{t.seconds:.1f} s from the first POST to the last completion (seen by polling after "
                    f"{t.seen_after_s:.1f} s); CPU busy over the run: manager {t.cpu['manager']:.0%}, "
                    f"agents {t.cpu['agents']:.0%}, work {t.cpu['work']:.0%}, client "
                    f"{t.cpu['client']:.0%}, PostgreSQL {t.cpu['postgres']:.0%}, others "
                    f"{t.cpu['others']:.0%}; CPU ms per task: {cpu_per_task(t)}"
                ),
                **common,
            )
        )
        out.append(
            Figure(
                label=f"POST /tasks while the agents work, {name}",
                unit="submissions/s",
                higher_is_better=True,
                herder=t.submit_rate,
                note=(
                    f"{SUBMIT_CONCURRENCY} at once; p50 {t.submit_p50_ms:.1f} ms, "
                    f"p99 {t.submit_p99_ms:.1f} ms"
                ),
                **common,
            )
        )
        out.append(
            Figure(
                label=f"POST /tasks alone (no agent linked), {name}",
                unit="submissions/s",
                higher_is_better=True,
                herder=t.alone_rate,
                note=(
                    f"{t.alone_count:,} tasks, {SUBMIT_CONCURRENCY} at once, {t.tasks:,} already in the "
                    f"database; p50 {t.alone_p50_ms:.1f} ms, p99 {t.alone_p99_ms:.1f} ms"
                ),
                **common,
            )
        )
    for db, b in m.beats.items():
        name = DB_NAMES[db]
        clients = f"{b.clients} client process{'es' if b.clients > 1 else ''}"
        note = (
            f"{b.beats:,} beats sent in {b.window_s:g} s ({b.beats / b.window_s:,.0f}/s of the "
            f"{b.workers:,}/s offered); p50 {b.p50_ms:.1f}, p90 {b.p90_ms:.1f}, max "
            f"{b.max_ms:.1f} ms; {clients} at {' + '.join(f'{c:.0%}' for c in b.client_busy)} of a CPU; "
            f"{b.late} beats late, {b.errors} errors"
        )
        out.append(
            Figure(
                label=f"{b.workers:,} workers heartbeating once a second, {name}: round trip p99",
                unit="ms",
                higher_is_better=False,
                herder=b.p99_ms,
                goal=f"≤ {P99_GOAL_MS:g} ms on one core",
                met=b.p99_ms <= P99_GOAL_MS and b.errors == 0,
                note=note,
                **common,
            )
        )
        out.append(
            Figure(
                label=f"{b.workers:,} workers heartbeating once a second, {name}: round trip p50",
                unit="ms",
                higher_is_better=False,
                herder=b.p50_ms,
                **common,
            )
        )
        out.append(
            Figure(
                label=f"{b.workers:,} workers heartbeating once a second, {name}: manager CPU",
                unit="% of one core",
                higher_is_better=False,
                herder=b.manager_busy * 100,
                note=f"{b.manager_us_per_beat:.0f} µs per beat; RSS {b.manager_rss_mib:.0f} MiB",
                **common,
            )
        )
    return out


def run(quick: bool = False) -> list[Figure]:
    return figures(measure(quick))


# -- detail tables ------------------------------------------------------------------------


CPU_KEYS = ("manager", "agents", "work", "client", "postgres", "others")
TASK_HEADER = (
    "database",
    "tasks",
    "agents x slots",
    "seconds",
    "tasks/s",
    "raw spawns/s before / after (others)",
    "of spawns",
    "POST/s (working)",
    "POST p50 / p99 ms",
    "POST/s alone",
    "alone p50 / p99 ms",
    "busy: manager / agents / work / client / postgres / others",
    "CPU ms per task: manager / agents / work / postgres",
)


def task_rows(m: Measured) -> list[tuple[str, ...]]:
    return [
        (
            DB_NAMES[db],
            f"{t.tasks:,}",
            f"{t.agents} x {t.slots}",
            f"{t.seconds:.1f}",
            f"{t.rate:,.0f}",
            " / ".join(f"{r:,.0f} ({o:.0%})" for r, o in t.spawns),
            f"{t.rate / t.spawn_rate:.0%}",
            f"{t.submit_rate:,.0f}",
            f"{t.submit_p50_ms:.1f} / {t.submit_p99_ms:.1f}",
            f"{t.alone_rate:,.0f}",
            f"{t.alone_p50_ms:.1f} / {t.alone_p99_ms:.1f}",
            " / ".join(f"{t.cpu[k]:.0%}" for k in CPU_KEYS),
            cpu_per_task(t),
        )
        for db, t in m.tasks.items()
    ]


BEAT_HEADER = (
    "database",
    "workers",
    "beats",
    "beats/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "manager CPU",
    "µs/beat",
    "manager RSS MiB",
    "client CPU",
    "postgres",
    "others",
    "linking s",
    "late / errors",
)


def beat_rows(m: Measured) -> list[tuple[str, ...]]:
    return [
        (
            DB_NAMES[db],
            f"{b.workers:,}",
            f"{b.beats:,}",
            f"{b.beats / b.window_s:,.0f}",
            f"{b.p50_ms:.1f}",
            f"{b.p90_ms:.1f}",
            f"{b.p99_ms:.1f}",
            f"{b.max_ms:.1f}",
            f"{b.manager_busy:.0%}",
            f"{b.manager_us_per_beat:.0f}",
            f"{b.manager_rss_mib:.0f}",
            " + ".join(f"{c:.0%}" for c in b.client_busy),
            f"{b.postgres_busy:.0%}",
            f"{b.others_busy:.0%}",
            f"{b.connect_s:.1f}",
            f"{b.late} / {b.errors}",
        )
        for db, b in m.beats.items()
    ]


def format_detail(m: Measured, markdown: bool = False) -> str:
    tables = []
    if m.tasks:
        tables.append(harness.rows_table(TASK_HEADER, task_rows(m), markdown))
    if m.beats:
        tables.append(harness.rows_table(BEAT_HEADER, beat_rows(m), markdown))
    return "\n\n".join(tables)


def main() -> int:
    parser = harness.report_parser(__doc__ or "", "1,000 tasks, 200 simulated workers for 5 s (a smoke test)")
    parser.add_argument("--slots", type=int, default=SLOTS, help=f"each agent's --slots [{SLOTS}]")
    parser.add_argument(
        "--clients", type=int, default=CLIENTS, help=f"processes driving the simulated workers [{CLIENTS}]"
    )
    parser.add_argument("--pg-url", default=PG_URL, help=f"an existing PostgreSQL database [{PG_URL}]")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite alone")
    parser.add_argument(
        "--part", choices=PARTS, action="append", help="only tasks end to end, or only heartbeats"
    )
    args = parser.parse_args()
    t0 = time.monotonic()
    source = harness.source_state()
    try:
        m = measure(
            args.quick, args.slots, args.clients, not args.no_postgres, args.pg_url, args.part or PARTS
        )
    except NoPostgres as exc:
        print(f"bench_manager: {exc}", file=sys.stderr)
        return 2
    harness.print_report(
        "herder manager benchmark", args, t0, source, figures(m), format_detail(m, args.markdown), asdict(m)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
