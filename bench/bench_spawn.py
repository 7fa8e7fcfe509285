"""Benchmark 2: start 200 ``sleep 1000`` processes until all run; processes per second.

How: the daemon is started and idle; the clock starts when the first start request is
sent and stops when (a) 200 children of the daemon have exec'd ``sleep`` (seen in
``/proc``) and (b) the daemon's own API says all 200 are running. Each daemon is asked
the way its users would:

* herder: 200 ``POST /create-process`` (argv ``[sleep, 1000]``), over 4 keep-alive
  connections at once, from a lean raw HTTP client (httpx would burn a core of this
  2-core machine in the client, slowing the agent and the very spawns it times), then
  ``GET /list-processes`` until every process is ``running`` with a pid;
* supervisord: 200 ``[program:x]`` sections with ``autostart=false``, ``startsecs=0``
  (so that RUNNING means started, not "survived a second"), started by one XML-RPC
  ``startAllProcesses`` (what ``supervisorctl start all`` sends), then
  ``getAllProcessInfo`` until all are RUNNING;
* Circus, two ways, and the better one is compared: 200 watchers started by 200
  ``start --waiting`` calls (one per watcher, like herder's one request per process), and one
  watcher with ``numprocesses = 200`` started by one ``start`` call.

Every daemon captures both output streams of each process into files (see
``daemons.py``). The reference is the floor: 200 ``subprocess.Popen`` from Python with
the same pipes, timed the same way. Teardown (stopping 200 processes) is not timed.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import harness
from daemons import Circus, CircusBridge, Daemon, Herder, Program, Supervisord
from harness import SLEEP, ChildWatcher, Deadline, Figure, median

COUNT = 200
TIMEOUT_S = 120.0
HERDER_CONNECTIONS = 4


def sleepers(count: int = COUNT) -> list[Program]:
    return [Program(f"s{i:03d}", [SLEEP, "1000"]) for i in range(count)]


def timed(daemon: Daemon, request: Callable[[], object], api_all_running: Callable[[], bool]) -> float:
    """Run ``request``; return processes/s until /proc and the API both show all running."""
    watcher = ChildWatcher(daemon.pid, "sleep")
    try:
        deadline = Deadline(TIMEOUT_S, f"{daemon.name}: start {COUNT} processes")
        t0 = time.perf_counter()
        request()
        while True:
            if len(watcher.scan()) == COUNT and api_all_running():
                return COUNT / (time.perf_counter() - t0)
            deadline.check()
            time.sleep(0.001)
    finally:
        daemon.stop()
        watcher.cleanup()


def herder_rate(workdir: Path) -> float:
    daemon = Herder(workdir)
    try:
        daemon.start()
        daemon.processes()  # imports httpx and connects now, not in the timed part
    except BaseException:
        daemon.stop()
        raise
    programs = sleepers()
    return timed(
        daemon, lambda: daemon.create_many(programs, HERDER_CONNECTIONS), lambda: daemon.all_running(COUNT)
    )


def supervisord_rate(workdir: Path) -> float:
    daemon = Supervisord(workdir, sleepers())
    try:
        daemon.start()
        rpc = daemon.rpc()
    except BaseException:
        daemon.stop()
        raise

    def all_running() -> bool:
        infos = rpc.supervisor.getAllProcessInfo()
        return len(infos) == COUNT and all(i["statename"] == "RUNNING" for i in infos)

    return timed(daemon, lambda: rpc.supervisor.startAllProcesses(True), all_running)


def circus_rate(workdir: Path, bridge: CircusBridge, one_watcher: bool) -> float:
    programs = [Program("sleepers", [SLEEP, "1000"], processes=COUNT)] if one_watcher else sleepers()
    daemon = Circus(workdir, programs, bridge)
    try:
        daemon.start()
    except BaseException:
        daemon.stop()
        raise
    # "waiting": each start answers once done; Circus refuses a start while another runs.
    starts = [
        {"command": "start", "properties": {"name": p.name, "match": "simple", "waiting": True}}
        for p in programs
    ]

    def all_running() -> bool:
        if one_watcher:
            return len(daemon.call("list", name="sleepers")["pids"]) == COUNT
        statuses = daemon.call("status")["statuses"]
        return all(statuses.get(p.name) == "active" for p in programs)

    return timed(daemon, lambda: daemon.call_many(starts), all_running)


def popen_rate(workdir: Path) -> float:
    """The floor: Popen 200 sleeps from Python with both outputs piped, like the daemons."""
    procs: list[subprocess.Popen[bytes]] = []
    t0 = time.perf_counter()
    try:
        for _ in range(COUNT):
            procs.append(
                subprocess.Popen(
                    [SLEEP, "1000"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            )
        deadline = Deadline(TIMEOUT_S, "Popen 200")
        while any(harness.argv0(p.pid) != "sleep" for p in procs):
            deadline.check()
            time.sleep(0.001)
        return COUNT / (time.perf_counter() - t0)
    finally:
        for p in procs:
            p.kill()
            p.wait()
            assert p.stdout is not None
            assert p.stderr is not None
            p.stdout.close()
            p.stderr.close()


def run(quick: bool = False) -> list[Figure]:
    rounds = 1 if quick else 3
    rates: dict[str, list[float]] = {k: [] for k in ("herder", "supervisord", "circus", "circus1", "popen")}
    with tempfile.TemporaryDirectory(prefix="herder-bench-") as tmp:
        bridge = CircusBridge(Path(tmp))
        try:
            for round_no in range(1, rounds + 1):
                measures: list[tuple[str, Callable[[Path], float]]] = [
                    ("herder", herder_rate),
                    ("supervisord", supervisord_rate),
                    ("circus", lambda d: circus_rate(d, bridge, one_watcher=False)),
                    ("circus1", lambda d: circus_rate(d, bridge, one_watcher=True)),
                    ("popen", popen_rate),
                ]
                for name, measure in measures:
                    with tempfile.TemporaryDirectory(prefix="herder-bench-") as work:
                        rates[name].append(measure(Path(work)))
                harness.progress(f"spawn: round {round_no}/{rounds} done")
        finally:
            bridge.close()
    med = {k: median(v) for k, v in rates.items()}
    circus_best = max(med["circus"], med["circus1"])
    herder = med["herder"]
    return [
        Figure(
            bench="2",
            label=f"start {COUNT} `sleep` processes until all run",
            unit="processes/s",
            higher_is_better=True,
            herder=herder,
            supervisord=med["supervisord"],
            circus=circus_best,
            reference=med["popen"],
            reference_label="Popen from Python",
            goal="≥ 3x supervisord, ≥ 50% of Popen and ≥ Circus (issue 19)",
            met=herder >= 3 * med["supervisord"] and herder >= 0.5 * med["popen"] and herder >= circus_best,
            note=(
                f"Circus: {med['circus']:.0f}/s with {COUNT} watchers and one start call each, "
                f"{med['circus1']:.0f}/s with one watcher of {COUNT} processes (the better is compared); "
                f"median of {rounds}"
            ),
        )
    ]


if __name__ == "__main__":
    harness.main_for(__doc__ or "", run)
