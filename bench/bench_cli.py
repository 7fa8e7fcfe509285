"""Benchmark 13 (issue 16): the ``herder`` CLI's start-to-answer against ``supervisorctl status``.

An operator types a command and waits for its answer: what counts is the whole process,
from ``exec`` to exit, interpreter start and imports included. Each figure is the median
of N runs (20; 5 with ``--quick``), each run a real process started with
``subprocess.run`` and timed with ``time.perf_counter`` around it, its output read to
the end through pipes (as a terminal would get it), its exit status checked.

In the same run, round after round so that both see the same machine:

* ``supervisorctl -c CONF status`` against a ``supervisord`` supervising six programs
  (five ``sleep``, one that printed 20 lines first), over its unix socket;
* ``herder ps``, ``status SLUG``, ``logs SLUG``, ``rm SLUG`` (a process created over the
  API just before each run, not timed), ``tasks ls``, ``tasks submit`` (a command task
  with a tag no worker offers: it stays queued, adds no load) and ``workers ls`` against
  a ``herder agent`` running the same six programs and linked to a ``herder manager``
  (SQLite), URLs given in ``HERDER_AGENT_URL`` / ``HERDER_MANAGER_URL`` as a user's
  shell would.

Printed side by side: each herder command's median and p90 in ms, supervisorctl's median
of the same rounds, and the ratio herder / supervisorctl (at or below 1.00x: goal met).
The load average before and after is printed too: on a shared machine it says how much
to trust the figures. Both CLIs start from warm caches (two untimed runs of each first).

Everything listens on 127.0.0.1 (or a unix socket), lives in a temporary directory, and
every daemon is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import harness
from bench_manager import ManagerProc, wait_line
from daemons import Program, Supervisord
from harness import PEER_BIN, VENV_BIN, Deadline

HERDER = VENV_BIN / "herder"
APP = "bench"
TALKER = "talker"  # the program whose recent lines ``logs`` prints
TALKER_LINES = 20
SLEEPERS = 5
COMMAND_TIMEOUT_S = 60.0
ROUNDS, QUICK_ROUNDS = 20, 5
WARMUP_RUNS = 2
NOWHERE_TAG = "bench-cli-nowhere"  # no worker offers it: submitted tasks stay queued


def programs() -> list[Program]:
    talk = f"for i in $(seq {TALKER_LINES}); do echo line $i; done; exec sleep 1000"
    sleepers = [Program(f"sleep{i}", ["sleep", "1000"]) for i in range(SLEEPERS)]
    return [*sleepers, Program(TALKER, ["sh", "-c", talk])]


@dataclass
class Row:
    """One herder command's runs, and supervisorctl's runs in the same rounds."""

    command: str
    herder_s: list[float] = field(default_factory=list)
    supervisorctl_s: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.herder_s) / statistics.median(self.supervisorctl_s)


class LinkedAgent:
    """``herder agent --port 0 --manager URL``: one agent for the process commands and the
    one worker ``workers ls`` lists."""

    _LISTENING = re.compile(r"herder agent listening on (http://127\.0\.0\.1:\d+)")

    def __init__(self, work: Path, manager_url: str) -> None:
        self.work = work
        self.manager_url = manager_url
        self.log_path = work / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        config = self.work / "agent.toml"
        config.write_text('[manager]\nname = "bench-cli-agent"\n')
        argv: list[str | Path] = [HERDER, "agent", "--host", "127.0.0.1", "--port", "0", "--no-restore"]
        argv += ["--data-dir", self.work / "agent-data", "--config", config, "--manager", self.manager_url]
        self.proc = harness.start(argv, log_path=self.log_path)
        self.url = wait_line(self.log_path, self._LISTENING, self.proc, "herder agent")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=COMMAND_TIMEOUT_S) as answer:
            return json.loads(answer.read())

    def create(self, program: Program) -> None:
        self.call("POST", "/create-process", {"app": APP, "node": program.name, "command": program.argv})

    def wait_running(self, count: int) -> None:
        deadline = Deadline(60, "the agent's processes running")
        while True:
            procs = self.call("GET", "/list-processes")["processes"]
            if len(procs) >= count and all(p["state"] == "running" for p in procs):
                return
            deadline.check()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            harness.stop(self.proc, signal.SIGTERM, timeout_s=30)


def timed(argv: list[str | Path], env: dict[str, str]) -> float:
    """Seconds from start to exit of ``argv``; raises if it failed."""
    t0 = time.perf_counter()
    done = subprocess.run([str(a) for a in argv], capture_output=True, env=env, timeout=COMMAND_TIMEOUT_S)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, argv))}: exit {done.returncode}: {done.stderr.decode()[-500:]}"
        )
    return elapsed


def wait_workers_online(manager_url: str) -> None:
    deadline = Deadline(60, "the agent linking to the manager")
    while True:
        with urllib.request.urlopen(manager_url + "/workers", timeout=10) as answer:
            workers = json.loads(answer.read())
        if any(w.get("connection") == "online" for w in workers.values()):
            return
        deadline.check()
        time.sleep(0.05)


def run(rounds: int) -> tuple[list[Row], dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        work = Path(tmp)
        (work / "sup").mkdir()
        sup = Supervisord(work / "sup", programs())
        manager = ManagerProc(work, "manager", None, 5.0)
        agent: LinkedAgent | None = None
        try:
            harness.progress("cli: starting supervisord, a manager and an agent")
            sup.start()
            sup.rpc().supervisor.startAllProcesses()
            manager.start()
            agent = LinkedAgent(work, manager.url)
            agent.start()
            for program in programs():
                agent.create(program)
            agent.wait_running(len(programs()))
            wait_workers_online(manager.url)
            env = {**os.environ, "HERDER_AGENT_URL": agent.url, "HERDER_MANAGER_URL": manager.url}
            for name in ("HERDER_TOKEN_FILE", "HERDER_MANAGER_TOKEN_FILE"):
                env.pop(name, None)
            load_before = os.getloadavg()  # before the rounds: they load the machine themselves
            return measure(sup, agent, env, rounds), {"load_before": load_before}
        finally:
            if agent is not None:
                agent.stop()
            manager.stop()
            sup.stop()


def measure(sup: Supervisord, agent: LinkedAgent, env: dict[str, str], rounds: int) -> list[Row]:
    talker = f"{APP}.{TALKER}"
    fresh = iter(range(10**6))

    def rm_argv() -> list[str | Path]:
        node = f"gone{next(fresh)}"
        agent.create(Program(node, ["sleep", "1000"]))
        return [HERDER, "rm", f"{APP}.{node}"]

    commands: dict[str, Callable[[], list[str | Path]]] = {
        "ps": lambda: [HERDER, "ps"],
        "status": lambda: [HERDER, "status", talker],
        "logs": lambda: [HERDER, "logs", talker],
        "rm": rm_argv,
        "tasks ls": lambda: [HERDER, "tasks", "ls"],
        "tasks submit": lambda: [HERDER, "tasks", "submit", "command", "--tag", NOWHERE_TAG, "--", "true"],
        "workers ls": lambda: [HERDER, "workers", "ls"],
    }
    supervisorctl: list[str | Path] = [PEER_BIN / "supervisorctl", "-c", sup.workdir / "supervisord.conf"]
    supervisorctl.append("status")
    rows = {name: Row(name) for name in commands}
    for _ in range(WARMUP_RUNS):
        timed(supervisorctl, env)
        for make in commands.values():
            timed(make(), env)
    for i in range(rounds):
        harness.progress(f"cli: round {i + 1}/{rounds}")
        for name, make in commands.items():
            argv = make()  # before the clocks: rm's process is created here
            rows[name].supervisorctl_s.append(timed(supervisorctl, env))
            rows[name].herder_s.append(timed(argv, env))
    return list(rows.values())


def figures(quick: bool = False) -> list[harness.Figure]:
    """The rounds as ``run_all.py``'s figures: one per command, supervisorctl as the peer."""
    rows, _ = run(QUICK_ROUNDS if quick else ROUNDS)
    return [
        harness.Figure(
            bench="13 CLI",
            label=f"herder {row.command}, start to answer",
            unit="ms",
            higher_is_better=False,
            herder=statistics.median(row.herder_s) * 1000,
            supervisord=statistics.median(row.supervisorctl_s) * 1000,
            circus=None,
            goal="<= supervisorctl status",
            met=row.ratio <= 1.0,
            note=f"{row.ratio:.2f}x supervisorctl status in the same rounds",
        )
        for row in rows
    ]


def report(rows: list[Row], markdown: bool) -> str:
    header = [
        "command",
        "herder median ms",
        "herder p90 ms",
        "supervisorctl status median ms",
        "ratio",
        "goal",
    ]
    table = [
        [
            f"herder {row.command}",
            f"{statistics.median(row.herder_s) * 1000:.0f}",
            f"{harness.percentile(row.herder_s, 90) * 1000:.0f}",
            f"{statistics.median(row.supervisorctl_s) * 1000:.0f}",
            f"{row.ratio:.2f}x",
            "MET" if row.ratio <= 1.0 else "MISSED",
        ]
        for row in rows
    ]
    return harness.rows_table(header, table, markdown=markdown)


def main() -> None:
    parser = harness.report_parser(__doc__.split("\n", 1)[0], f"{QUICK_ROUNDS} rounds instead of {ROUNDS}")
    parser.add_argument("--rounds", type=int, help="runs of each command (overrides --quick)")
    args = parser.parse_args()
    harness.ensure_peer_venv()
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    source = harness.source_state()
    started = time.monotonic()
    rows, extra = run(rounds)
    load_after = os.getloadavg()
    print(f"bench_cli: {harness.machine_summary()}; {time.monotonic() - started:.0f} s, {rounds} rounds")
    print(harness.measured_line(source))
    before = " ".join(f"{x:.2f}" for x in extra["load_before"])
    print(f"load average before: {before}; after: {' '.join(f'{x:.2f}' for x in load_after)}\n")
    print(report(rows, args.markdown))
    print("\nratio: herder's median / supervisorctl status's median in the same rounds (<= 1.00x: met)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"machine": harness.machine_summary(), "source": source, "rounds": rounds, **extra}
        doc["rows"] = [asdict(r) | {"ratio": r.ratio} for r in rows]
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
