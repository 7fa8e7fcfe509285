"""Benchmark 14 (issue 17): several managers on one PostgreSQL: the scale-out ratio, heartbeats.

Real binaries only, the pieces of benchmark 9 (``bench_manager.py``): ``herder manager
--port 0`` processes on one fresh PostgreSQL database per run (``herder_bench_<random>_<phase>``,
created and dropped here), ``herder agent --port 0 --manager URL --slots N`` with a worker
name of its own. In one run:

1. **Tasks end to end with 1, 2 and 3 managers.** For each N, a fresh database, N managers
   on it (the default ``--heartbeat-interval``, 5 s: see ``TASKS_HEARTBEAT_S``) and 8 agents
   (``--slots 2`` each: 16 pieces of work at once, as in benchmark 9).
   Each agent is given one manager's URL, round-robin (``--spread round-robin``, the
   default: 4/4 with two managers, 3/3/2 with three), so that the ratio measures the
   managers and not the luck of a draw; ``--spread random`` gives each agent every URL
   (``--manager URL1,URL2,...``: it picks one at random) and reports where they linked
   (each agent's "linked to the manager" line). 5,000 tasks ``true`` (1,000 with
   ``--quick``) submitted as fast as a client can, 16 ``POST /tasks`` at once on 16
   keep-alive connections spread over the managers (connection i to manager i mod N).
   Clock from the first submission to the last ``completed`` (the largest ``updated_at``
   of the completed tasks, read page by page after ``GET /tasks/counts`` shows them all
   completed, polled every 0.2 s). The N runs take turns (1, 2, 3, then again with
   ``--rounds 2``, the default; 1 with ``--quick``); the better run of each N is kept (what
   other programs take only slows a run down). The ratios 2/1 and 3/1; goal: 2 managers
   ≥ 1.6x one manager's rate. Over each run, the CPU every process took, in CPUs' worth:
   each manager, the agents, the work (the children the agents reaped), the client,
   PostgreSQL's server processes, others (``/proc/stat`` less all that), against the
   machine's CPUs: a run that keeps them all busy is bound by the machine, not by herder.
2. **3,000 simulated workers heartbeating across 3 managers** (600 with ``--quick``): 3
   managers (``--heartbeat-interval 1``) on a fresh database, 1,000 workers each, driven by
   one ``manager_workers.py`` process per manager (real links, ``register``, then
   ``heartbeat`` once a second, the 3,000 beats spread evenly over each second). After 2 s of
   warm-up (1 s), the beats sent in a 15 s window (5 s) are timed by the clients: p50, p99
   and max per manager; the CPU of each manager, of the clients and of PostgreSQL. Goal: p99
   ≤ 50 ms on every manager. Nothing is pinned: three managers share two CPUs.

The load average (``/proc/loadavg``) is taken before and after every run and printed with
its figures: the machine is shared. Every process is stopped by its pid (SIGTERM, then
SIGKILL after a deadline); every wait has a deadline; the databases are dropped in
``finally``. PostgreSQL as in benchmark 9: ``--pg-url`` (default ``$HERDER_BENCH_PG_URL`` or
``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import harness
from bench_manager import (
    PG_URL,
    POLL_S,
    RUN_TIMEOUT_S,
    START_TIMEOUT_S,
    WORKERS_SCRIPT,
    Http,
    LinkedAgent,
    ManagerProc,
    NoPostgres,
    Submitted,
    children_cpu_seconds,
    compile_bytecode,
    pg_create,
    pg_drop,
    postgres_cpu,
    postgres_since,
    read_doc,
    submit,
)
from harness import VENV_BIN, Deadline, Figure, cpu_seconds, machine_busy_seconds, percentile

MANAGERS = (1, 2, 3)
AGENTS = 8
SLOTS = 2
TASKS, TASKS_QUICK = 5000, 1000
ROUNDS, ROUNDS_QUICK = 2, 1
SUBMIT_CONCURRENCY = 16
# The managers' default heartbeat interval for the tasks (leases of 15 s). With 1 s (leases
# of 3 s, benchmark 9's) runs on this shared 2-core machine at load 7 and more failed tasks:
# agents whose heartbeat answers came late refused the work pushed to them ("came after its
# lease could end: not started", the at-most-one-attempt guard), and some items lost three
# attempts so. The figure is the managers' throughput, not the guard's.
TASKS_HEARTBEAT_S = 5.0
RATIO_GOAL = 1.6  # 2 managers ≥ 1.6x one manager's tasks/s
SIM_MANAGERS = 3
SIM_WORKERS, SIM_WORKERS_QUICK = 3000, 600
BEAT_SECONDS, BEAT_SECONDS_QUICK = 15.0, 5.0
BEAT_WARMUP_S, BEAT_WARMUP_S_QUICK = 2.0, 1.0
BEATS_TIMEOUT_S = 240.0
P99_GOAL_MS = 50.0
SPREADS = ("round-robin", "random")
PARTS = ("tasks", "beats")
_LINKED = re.compile(r"linked to the manager (\S+) as worker")


def load_average() -> float:
    """The 1-minute load average: how busy the shared machine was around a figure."""
    return os.getloadavg()[0]


def start_managers(work: Path, count: int, db_url: str, tag: str, interval_s: float) -> list[ManagerProc]:
    """``count`` managers on one database, started one after the other (each on its port)."""
    managers = [
        ManagerProc(work, f"manager-{tag}-{i}", db_url, heartbeat_interval_s=interval_s) for i in range(count)
    ]
    for manager in managers:
        manager.start()
    return managers


def linked_to(agent: LinkedAgent, urls: Sequence[str]) -> str:
    """The manager URL the agent says it linked to (its log), within the start deadline."""
    deadline = Deadline(START_TIMEOUT_S, f"{agent.name} linking")
    while True:
        for match in _LINKED.finditer(agent.log_path.read_text(errors="replace")):
            if match.group(1).rstrip("/") in urls:
                return match.group(1).rstrip("/")
        deadline.check()
        time.sleep(0.02)


# -- 1: tasks end to end ------------------------------------------------------------------


@dataclass
class ScaleRun:
    managers: int
    round: int
    tasks: int
    seconds: float  # first submission to the last completion (the managers' clock)
    rate: float
    submit_rate: float
    submit_p99_ms: float
    agents_per_manager: list[int]  # where the agents linked, manager by manager
    cpu: dict[str, float]  # CPUs' worth over the run: manager-I, agents, work, client, postgres, others
    load_before: float
    load_after: float

    @property
    def own_ms_per_task(self) -> float:
        """herder's CPU per task (managers, agents, work, PostgreSQL, client; not others), in ms."""
        return (sum(self.cpu.values()) - self.cpu["others"]) / self.rate * 1e3

    @property
    def ceiling(self) -> float:
        """Tasks/s if every CPU of the machine ran this at this cost per task: the box's bound."""
        return (os.cpu_count() or 1) / self.own_ms_per_task * 1e3


async def submit_spread(ports: Sequence[int], count: int) -> Submitted:
    """``count`` tasks ``true`` over the managers: connection i to manager i mod N, task ids in
    one block per manager (benchmark 9's ``submit`` per manager, all at once)."""
    n = len(ports)
    conns = [sum(1 for c in range(SUBMIT_CONCURRENCY) if c % n == k) for k in range(n)]
    counts = [count // n + (k < count % n) for k in range(n)]
    firsts = [1 + sum(counts[:k]) for k in range(n)]
    parts = await asyncio.gather(
        *(submit(p, c, f, conc) for p, c, f, conc in zip(ports, counts, firsts, conns, strict=True))
    )
    return Submitted(
        min(s.first_s for s in parts),
        max(s.last_s for s in parts),
        [i for s in parts for i in s.ids],
        [ms for s in parts for ms in s.latencies_ms],
    )


async def wait_all_completed(port: int, count: int) -> float:
    """Until ``GET /tasks/counts`` shows ``count`` completed; the last completion's ``updated_at``.

    Raises if a task failed or was canceled.
    """
    async with Http(port) as http:
        while True:
            counts = await http.get("/tasks/counts")
            if counts["failed"] or counts["canceled"]:
                failed = (await http.get("/tasks?status=failed&limit=1"))["tasks"]
                raise RuntimeError(f"tasks ended badly: {counts}; the first failed: {failed}")
            if counts["completed"] >= count:
                break
            await asyncio.sleep(POLL_S)
        end, before = 0.0, ""
        while True:
            page = await http.get(f"/tasks?status=completed&limit=10000{before}")
            end = max([end, *(t["updated_at"] for t in page["tasks"])])
            if page["next"] is None:
                return end
            before = f"&before={page['next']}"


def run_scale(
    work: Path, pg_url: str, managers_n: int, round_: int, count: int, slots: int, spread: str
) -> ScaleRun:
    """A fresh database, ``managers_n`` managers, 8 agents; ``count`` tasks end to end."""
    tag = f"{managers_n}m{round_}"
    db_name, db_url = pg_create(pg_url, f"scale{tag}")
    managers: list[ManagerProc] = []
    agents: list[LinkedAgent] = []
    try:
        managers = start_managers(work, managers_n, db_url, tag, TASKS_HEARTBEAT_S)
        urls = [m.url for m in managers]
        (work / tag).mkdir()
        for i in range(AGENTS):
            given = ",".join(urls) if spread == "random" else urls[i % managers_n]
            agents.append(LinkedAgent(work / tag, i, given, slots))
            agents[-1].start()
        where = [linked_to(a, urls) for a in agents]
        per_manager = [where.count(u) for u in urls]
        _wait_online(managers[0], [a.name for a in agents])
        load_before = load_average()
        pids = {f"manager-{i}": m.pid for i, m in enumerate(managers)}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        agents0 = sum(cpu_seconds(a.pid) for a in agents)
        work0 = sum(children_cpu_seconds(a.pid) for a in agents)
        busy0, client0, pg0, t0 = machine_busy_seconds(), time.process_time(), postgres_cpu(), time.time()

        async def main() -> tuple[Submitted, float]:
            async with asyncio.timeout(RUN_TIMEOUT_S):
                sub = await submit_spread([m.port for m in managers], count)
                return sub, await wait_all_completed(managers[0].port, count)

        sub, end = asyncio.run(main())
        wall = time.time() - t0
        shares = {k: (cpu_seconds(p) - cpu0[k]) / wall for k, p in pids.items()}
        shares["agents"] = (sum(cpu_seconds(a.pid) for a in agents) - agents0) / wall
        shares["work"] = (sum(children_cpu_seconds(a.pid) for a in agents) - work0) / wall
        shares["client"] = (time.process_time() - client0) / wall
        shares["postgres"] = postgres_since(pg0) / wall
        shares["others"] = max(0.0, (machine_busy_seconds() - busy0) / wall - sum(shares.values()))
        seconds = end - sub.first_s
        run = ScaleRun(
            managers=managers_n,
            round=round_,
            tasks=count,
            seconds=seconds,
            rate=count / seconds,
            submit_rate=sub.rate,
            submit_p99_ms=percentile(sub.latencies_ms, 99),
            agents_per_manager=per_manager,
            cpu=shares,
            load_before=load_before,
            load_after=load_average(),
        )
        harness.progress(
            f"managers-scale: {managers_n} manager(s), agents {per_manager}: {run.rate:,.0f} tasks/s "
            f"({seconds:.1f} s); machine busy {sum(shares.values()):.2f} of {os.cpu_count()} CPUs; "
            f"load {load_before:.2f} -> {run.load_after:.2f}"
        )
        return run
    finally:
        for agent in agents:
            agent.stop()
        for manager in managers:
            manager.stop()
        pg_drop(pg_url, db_name)


def _wait_online(manager: ManagerProc, names: Sequence[str]) -> None:
    """Until ``GET /workers`` (one database: any manager) lists every agent online."""

    async def poll() -> None:
        async with Http(manager.port) as http:
            while True:
                workers = await http.get("/workers")
                if all(workers.get(n, {}).get("connection") == "online" for n in names):
                    return
                await asyncio.sleep(0.05)

    async def bounded() -> None:
        async with asyncio.timeout(START_TIMEOUT_S):
            await poll()

    asyncio.run(bounded())


# -- 2: heartbeats across three managers --------------------------------------------------


@dataclass
class ManagerBeats:
    index: int
    workers: int
    beats: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    busy: float  # the manager's CPU over the window, share of one CPU
    client_busy: float  # its client process's
    late: int
    errors: int
    first_errors: list[str] = field(default_factory=list)


@dataclass
class SpreadBeats:
    workers: int
    window_s: float
    connect_s: float
    per_manager: list[ManagerBeats]
    postgres_busy: float
    others_busy: float
    load_before: float
    load_after: float


def measure_beats(work: Path, pg_url: str, workers: int, seconds: float, warmup: float) -> SpreadBeats:
    """3 managers on a fresh database, ``workers`` simulated workers spread evenly over them."""
    db_name, db_url = pg_create(pg_url, "beats")
    managers: list[ManagerProc] = []
    helpers: list[subprocess.Popen[bytes]] = []
    deadline = Deadline(BEATS_TIMEOUT_S, f"{workers} simulated workers over {SIM_MANAGERS} managers")
    share = workers // SIM_MANAGERS
    try:
        managers = start_managers(work, SIM_MANAGERS, db_url, "beats", 1.0)
        for c, manager in enumerate(managers):
            argv: list[str | Path] = [
                VENV_BIN / "python",
                WORKERS_SCRIPT,
                "--url",
                "ws" + manager.url[4:] + "/rpc",
            ]
            argv += ["--count", str(share), "--prefix", f"sim{c}", "--offset", str(c * share)]
            argv += ["--total", str(share * SIM_MANAGERS), "--warmup", str(warmup), "--seconds", str(seconds)]
            helpers.append(harness.start(argv, log_path=work / f"workers-{c}.log", pipes=True))
        connect_s = max(read_doc(h, deadline, "linking")["connect_s"] for h in helpers)
        harness.progress(
            f"managers-scale: {share * SIM_MANAGERS} simulated workers linked in {connect_s:.1f} s"
        )
        load_before = load_average()
        for h in helpers:
            assert h.stdin is not None
            h.stdin.write(b"go\n")
            h.stdin.flush()
        time.sleep(warmup)  # the clients' own warm-up: their window starts now
        cpu0 = [cpu_seconds(m.pid) for m in managers]
        busy0, pg0, t0 = machine_busy_seconds(), postgres_cpu(), time.perf_counter()
        time.sleep(seconds)
        wall = time.perf_counter() - t0
        cpu = [(cpu_seconds(m.pid) - c0) / wall for m, c0 in zip(managers, cpu0, strict=True)]
        busy, pg = (machine_busy_seconds() - busy0) / wall, postgres_since(pg0) / wall
        docs = [read_doc(h, deadline, "results") for h in helpers]
        for h in helpers:
            h.wait(timeout=max(1.0, deadline.remaining))
        load_after = load_average()
    finally:
        for h in helpers:
            harness.stop(h, signal.SIGTERM, timeout_s=10)
        for manager in managers:
            manager.stop()
        pg_drop(pg_url, db_name)
    per: list[ManagerBeats] = []
    for i, doc in enumerate(docs):
        ms = [x / 1e3 for x in doc["latencies_us"]]
        if not ms:
            raise RuntimeError(f"manager {i}: no heartbeat answered in the window: {doc['first_errors']}")
        per.append(
            ManagerBeats(
                index=i,
                workers=share,
                beats=len(ms),
                p50_ms=percentile(ms, 50),
                p99_ms=percentile(ms, 99),
                max_ms=max(ms),
                busy=cpu[i],
                client_busy=doc["cpu_s"] / doc["seconds"],
                late=int(doc["late"]),
                errors=int(doc["errors"]),
                first_errors=list(doc["first_errors"]),
            )
        )
    clients = sum(b.client_busy for b in per)
    result = SpreadBeats(
        workers=share * SIM_MANAGERS,
        window_s=seconds,
        connect_s=connect_s,
        per_manager=per,
        postgres_busy=pg,
        others_busy=max(0.0, busy - sum(cpu) - pg - clients),
        load_before=load_before,
        load_after=load_after,
    )
    harness.progress(
        "managers-scale: heartbeats p99 per manager "
        + ", ".join(f"{b.p99_ms:.1f} ms ({b.busy:.0%} CPU)" for b in per)
        + f"; PostgreSQL {pg:.0%}; load {load_before:.2f} -> {load_after:.2f}"
    )
    return result


# -- the benchmark ------------------------------------------------------------------------


@dataclass
class Measured:
    quick: bool
    spread: str
    slots: int
    runs: list[ScaleRun] = field(default_factory=list)
    beats: SpreadBeats | None = None

    def best(self, managers_n: int) -> ScaleRun:
        return max((r for r in self.runs if r.managers == managers_n), key=lambda r: r.rate)


def measure(
    quick: bool = False,
    spread: str = "round-robin",
    slots: int = SLOTS,
    rounds: int | None = None,
    pg_url: str = PG_URL,
    parts: Sequence[str] = PARTS,
    managers: Sequence[int] = MANAGERS,
    keep: Path | None = None,
) -> Measured:
    compile_bytecode()
    m = Measured(quick, spread, slots)
    with tempfile.TemporaryDirectory(prefix="herder-bench-managers-") as tmp:
        work = Path(tmp) if keep is None else keep
        if "tasks" in parts:
            count = TASKS_QUICK if quick else TASKS
            for round_ in range(rounds or (ROUNDS_QUICK if quick else ROUNDS)):
                for n in managers:
                    m.runs.append(run_scale(work, pg_url, n, round_, count, slots, spread))
        if "beats" in parts:
            workers = SIM_WORKERS_QUICK if quick else SIM_WORKERS
            seconds = BEAT_SECONDS_QUICK if quick else BEAT_SECONDS
            warmup = BEAT_WARMUP_S_QUICK if quick else BEAT_WARMUP_S
            m.beats = measure_beats(work, pg_url, workers, seconds, warmup)
    return m


def _cpu_note(r: ScaleRun) -> str:
    managers = " + ".join(f"{r.cpu[f'manager-{i}']:.0%}" for i in range(r.managers))
    total = sum(r.cpu.values())
    return (
        f"CPU over the run: manager(s) {managers}, agents {r.cpu['agents']:.0%}, work {r.cpu['work']:.0%}, "
        f"PostgreSQL {r.cpu['postgres']:.0%}, client {r.cpu['client']:.0%}, others {r.cpu['others']:.0%}: "
        f"{total:.2f} of {os.cpu_count()} CPUs busy; {r.own_ms_per_task:.1f} ms of CPU per task (others "
        f"left out): at most {r.ceiling:,.0f} tasks/s on this machine at that cost; agents per manager "
        f"{r.agents_per_manager}; "
        f"load {r.load_before:.2f} before, {r.load_after:.2f} after"
    )


def figures(m: Measured) -> list[Figure]:
    common: dict[str, Any] = {"bench": "14", "supervisord": None, "circus": None}
    out: list[Figure] = []
    done = sorted({r.managers for r in m.runs})
    for n in done:
        r = m.best(n)
        out.append(
            Figure(
                label=f"{r.tasks:,} `true` tasks, {n} manager{'s' if n > 1 else ''} on one PostgreSQL, "
                f"{AGENTS} agents ({m.slots} slots each, {m.spread}): end to end",
                unit="tasks/s",
                higher_is_better=True,
                herder=r.rate,
                note=f"the better of {sum(1 for x in m.runs if x.managers == n)}; {_cpu_note(r)}",
                **common,
            )
        )
    if 1 in done:
        one = m.best(1).rate
        for n in (x for x in done if x > 1):
            ratio = m.best(n).rate / one
            goal = {"goal": f"≥ {RATIO_GOAL:g}x", "met": ratio >= RATIO_GOAL} if n == 2 else {}
            out.append(
                Figure(
                    label=f"scale-out: {n} managers' tasks/s over one manager's",
                    unit="x",
                    higher_is_better=True,
                    herder=ratio,
                    **goal,
                    **common,
                )
            )
    if m.beats is not None:
        b = m.beats
        for mb in b.per_manager:
            out.append(
                Figure(
                    label=f"{b.workers:,} workers heartbeating once a second over {SIM_MANAGERS} managers: "
                    f"manager {mb.index}'s {mb.workers:,}, round trip p99",
                    unit="ms",
                    higher_is_better=False,
                    herder=mb.p99_ms,
                    goal=f"≤ {P99_GOAL_MS:g} ms",
                    met=mb.p99_ms <= P99_GOAL_MS and mb.errors == 0,
                    note=(
                        f"{mb.beats:,} beats in {b.window_s:g} s; p50 {mb.p50_ms:.1f}, "
                        f"max {mb.max_ms:.1f} ms; "
                        f"manager {mb.busy:.0%} of a CPU, its client {mb.client_busy:.0%}; PostgreSQL "
                        f"{b.postgres_busy:.0%}; {mb.late} late, {mb.errors} errors; load "
                        f"{b.load_before:.2f} before, {b.load_after:.2f} after"
                    ),
                    **common,
                )
            )
    return out


def run(quick: bool = False) -> list[Figure]:
    return figures(measure(quick))


# -- detail tables ------------------------------------------------------------------------

SCALE_HEADER = (
    "managers",
    "round",
    "agents per manager",
    "seconds",
    "tasks/s",
    "POST/s",
    "POST p99 ms",
    "busy: managers",
    "agents",
    "work",
    "PostgreSQL",
    "client",
    "others",
    "all (of CPUs)",
    "CPU ms / task",
    "bound: CPUs / cost",
    "load before / after",
)


def scale_rows(m: Measured) -> list[tuple[str, ...]]:
    cpus = os.cpu_count()
    return [
        (
            str(r.managers),
            str(r.round + 1),
            " / ".join(str(a) for a in r.agents_per_manager),
            f"{r.seconds:.1f}",
            f"{r.rate:,.0f}",
            f"{r.submit_rate:,.0f}",
            f"{r.submit_p99_ms:.1f}",
            " + ".join(f"{r.cpu[f'manager-{i}']:.0%}" for i in range(r.managers)),
            f"{r.cpu['agents']:.0%}",
            f"{r.cpu['work']:.0%}",
            f"{r.cpu['postgres']:.0%}",
            f"{r.cpu['client']:.0%}",
            f"{r.cpu['others']:.0%}",
            f"{sum(r.cpu.values()):.2f} of {cpus}",
            f"{r.own_ms_per_task:.1f}",
            f"{r.ceiling:,.0f}",
            f"{r.load_before:.2f} / {r.load_after:.2f}",
        )
        for r in m.runs
    ]


BEAT_HEADER = (
    "manager",
    "workers",
    "beats",
    "p50 ms",
    "p99 ms",
    "max ms",
    "manager CPU",
    "client CPU",
    "late / errors",
)


def beat_rows(b: SpreadBeats) -> list[tuple[str, ...]]:
    return [
        (
            str(x.index),
            f"{x.workers:,}",
            f"{x.beats:,}",
            f"{x.p50_ms:.1f}",
            f"{x.p99_ms:.1f}",
            f"{x.max_ms:.1f}",
            f"{x.busy:.0%}",
            f"{x.client_busy:.0%}",
            f"{x.late} / {x.errors}",
        )
        for x in b.per_manager
    ]


def format_detail(m: Measured, markdown: bool = False) -> str:
    tables = []
    if m.runs:
        tables.append(harness.rows_table(SCALE_HEADER, scale_rows(m), markdown))
    if m.beats is not None:
        b = m.beats
        tables.append(
            harness.rows_table(BEAT_HEADER, beat_rows(b), markdown)
            + f"\n\nPostgreSQL {b.postgres_busy:.0%} of a CPU, others {b.others_busy:.0%}; linking "
            f"{b.connect_s:.1f} s; load {b.load_before:.2f} before, {b.load_after:.2f} after"
        )
    return "\n\n".join(tables)


def main() -> int:
    parser = harness.report_parser(__doc__ or "", "1,000 tasks once per N, 600 simulated workers for 5 s")
    parser.add_argument("--slots", type=int, default=SLOTS, help=f"each agent's --slots [{SLOTS}]")
    parser.add_argument(
        "--spread", choices=SPREADS, default="round-robin", help="one URL per agent, or all of them"
    )
    parser.add_argument("--rounds", type=int, help=f"runs of each N [{ROUNDS}; {ROUNDS_QUICK} with --quick]")
    parser.add_argument("--pg-url", default=PG_URL, help=f"an existing PostgreSQL database [{PG_URL}]")
    parser.add_argument("--part", choices=PARTS, action="append", help="only tasks, or only heartbeats")
    parser.add_argument(
        "--managers", type=int, choices=MANAGERS, action="append", help="only these N (tasks) [1, 2, 3]"
    )
    parser.add_argument("--keep", type=Path, help="a new directory: every process's log is kept there")
    args = parser.parse_args()
    t0 = time.monotonic()
    source = harness.source_state()
    load = load_average()
    try:
        if args.keep is not None:
            args.keep.mkdir(parents=True)
        m = measure(
            args.quick,
            args.spread,
            args.slots,
            args.rounds,
            args.pg_url,
            args.part or PARTS,
            args.managers or MANAGERS,
            args.keep,
        )
    except NoPostgres as exc:
        print(f"bench_managers_scale: {exc}", file=sys.stderr)
        return 2
    harness.print_report(
        "herder managers scale-out benchmark",
        args,
        t0,
        source,
        figures(m),
        format_detail(m, args.markdown)
        + f"\n\nload average {load:.2f} at the start, {load_average():.2f} at the end",
        asdict(m),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
