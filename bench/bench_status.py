"""Benchmark 4: control-API requests per second while supervising 10 processes.

How: each daemon runs 10 ``sleep 1000``; then ``loadgen.py`` (one interpreter,
``.bench-venv``'s, for every daemon) sends requests back to back over one connection
for 2 s (1 s with ``--quick``) and counts the answers. Two requests, each in the daemon's own protocol:

* status of one process: herder ``GET /process-status/bench.p0``, supervisord
  ``supervisor.getProcessInfo("p0")``, Circus ``status`` of watcher ``p0``;
* the list of all 10: herder ``GET /list-processes``, supervisord
  ``supervisor.getAllProcessInfo()``, Circus ``status`` of every watcher.

supervisord is asked over its unix socket (what ``supervisorctl`` uses, and cheaper
than TCP), herder over TCP on 127.0.0.1 with keep-alive, Circus over ZeroMQ TCP with
its own ``CircusClient``. The answers differ in richness: herder's status document
carries links and every field of the seed; Circus's status is one word per watcher.

Each sequential figure is measured twice: with the answers only framed (what the
daemon can serve) and with every answer decoded by the client (``json.loads`` or
``xmlrpc.client.loads``, what a client library costs on top: XML-RPC is heavier to
decode than JSON, which is a real cost of supervisord's protocol).

The concurrent variant runs ``CLIENTS`` such clients at once, each in its own process
with its own connection, all measuring the same window. The goal (issue 19) holds on
all six figures: at least ``GOAL_FACTOR`` times supervisord and at least Circus.

The reference is a bare FastAPI ``GET /`` on uvicorn with the same client: the floor of
FastAPI's request path on this machine, which herder's status reads no longer take (the
agent answers them in its HTTP protocol: ``herder.agent.api.fastreads``).
"""

from __future__ import annotations

import json
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
from daemons import BareFastAPI, Circus, CircusBridge, Daemon, Herder, Program, Supervisord
from harness import BENCH_DIR, PEER_BIN, SLEEP, ChildWatcher, Deadline, Figure, median

PROCESSES = 10
CLIENTS = 4
GOAL_FACTOR = 1.5  # times supervisord; and at least Circus (issue 19)


def programs() -> list[Program]:
    return [Program(f"p{i}", [SLEEP, "1000"]) for i in range(PROCESSES)]


def load(workdir: Path, argv: list[str], seconds: float, clients: int) -> dict[str, float]:
    """Run ``clients`` load generators at once; their summed rate and median latency."""
    # Concurrent clients start together once all have imported and warmed up.
    start_at = time.time() + 1.5 if clients > 1 else 0.0
    cmd: list[str | Path] = [PEER_BIN / "python", BENCH_DIR / "loadgen.py", *argv]
    cmd += ["--seconds", str(seconds), "--start-at", str(start_at)]
    procs = [harness.start(cmd, log_path=workdir / "loadgen.err", pipes=True) for _ in range(clients)]
    results: list[dict[str, Any]] = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 60)
            if proc.returncode != 0:
                err = (workdir / "loadgen.err").read_text()[-2000:]
                raise RuntimeError(f"loadgen {argv} failed ({proc.returncode}): {err}")
            results.append(json.loads(out))
    finally:
        for proc in procs:
            harness.stop(proc, signal.SIGTERM, timeout_s=5)
    return {
        "rate": sum(r["requests"] / r["seconds"] for r in results),
        "p50_ms": median([r["p50_ms"] for r in results]),
        "reconnects": sum(r["reconnects"] for r in results),
    }


def measure(workdir: Path, requests: dict[str, list[str]], seconds: float) -> dict[str, Any]:
    """Every request of ``requests``: sequential (answers framed, then decoded) and concurrent."""
    out: dict[str, Any] = {}
    for op, argv in requests.items():
        out[op] = load(workdir, argv, seconds, 1)
        out[f"{op}-decoded"] = load(workdir, [*argv, "--decode"], seconds, 1)
        out[f"{op}-concurrent"] = load(workdir, argv, seconds, CLIENTS)
    return out


def with_processes(daemon: Daemon, start_all: Callable[[], object]) -> ChildWatcher:
    """Start the daemon's 10 processes and wait until they run."""
    start_all()
    watcher = ChildWatcher(daemon.pid, "sleep")
    watcher.wait_count(PROCESSES, Deadline(60, f"{daemon.name}: {PROCESSES} processes"))
    return watcher


def run_herder(workdir: Path, seconds: float) -> dict[str, Any]:
    daemon = Herder(workdir)
    watcher = None
    try:
        daemon.start()
        watcher = with_processes(daemon, lambda: [daemon.create(p) for p in programs()])
        target = f"127.0.0.1:{daemon.port}"
        return measure(
            workdir,
            {
                "status": ["http", target, "/process-status/bench.p0"],
                "list": ["http", target, "/list-processes"],
            },
            seconds,
        )
    finally:
        daemon.stop()
        if watcher:
            watcher.cleanup()


def run_supervisord(workdir: Path, seconds: float) -> dict[str, Any]:
    daemon = Supervisord(workdir, programs())
    watcher = None
    try:
        daemon.start()
        watcher = with_processes(daemon, lambda: daemon.rpc().supervisor.startAllProcesses(True))
        sock = daemon.socket_path
        return measure(
            workdir,
            {
                "status": ["xmlrpc", sock, "supervisor.getProcessInfo", "--params", '["p0"]'],
                "list": ["xmlrpc", sock, "supervisor.getAllProcessInfo"],
            },
            seconds,
        )
    finally:
        daemon.stop()
        if watcher:
            watcher.cleanup()


def run_circus(workdir: Path, seconds: float, bridge: CircusBridge) -> dict[str, Any]:
    daemon = Circus(workdir, programs(), bridge)
    watcher = None
    try:
        daemon.start()
        starts = [
            {"command": "start", "properties": {"name": p.name, "match": "simple", "waiting": True}}
            for p in programs()
        ]
        watcher = with_processes(daemon, lambda: daemon.call_many(starts))
        status = json.dumps({"command": "status", "properties": {"name": "p0"}})
        everything = json.dumps({"command": "status", "properties": {}})
        return measure(
            workdir,
            {"status": ["circus", daemon.endpoint, status], "list": ["circus", daemon.endpoint, everything]},
            seconds,
        )
    finally:
        daemon.stop()
        if watcher:
            watcher.cleanup()


def run_reference(workdir: Path, seconds: float) -> dict[str, Any]:
    app = BareFastAPI(workdir)
    try:
        app.start()
        argv = ["http", f"127.0.0.1:{app.port}", "/"]
        return {
            "status": load(workdir, argv, seconds, 1),
            "status-decoded": load(workdir, [*argv, "--decode"], seconds, 1),
        }
    finally:
        app.stop()


def run(quick: bool = False) -> list[Figure]:
    seconds = 1.0 if quick else 2.0
    res: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="herder-bench-") as tmp:
        bridge = CircusBridge(Path(tmp))
        try:
            measures: list[tuple[str, Callable[[Path], dict[str, Any]]]] = [
                ("herder", lambda d: run_herder(d, seconds)),
                ("supervisord", lambda d: run_supervisord(d, seconds)),
                ("circus", lambda d: run_circus(d, seconds, bridge)),
                ("reference", lambda d: run_reference(d, seconds)),
            ]
            for name, measure_one in measures:
                with tempfile.TemporaryDirectory(prefix="herder-bench-") as work:
                    res[name] = measure_one(Path(work))
                harness.progress(f"status: {name} done")
        finally:
            bridge.close()
    return figures(res)


def figures(res: dict[str, dict[str, Any]]) -> list[Figure]:
    out = []
    labels = {
        "status": "status of 1 process, sequential on 1 connection",
        "list": f"list of {PROCESSES} processes, sequential on 1 connection",
        "status-decoded": "status of 1 process, sequential, client decodes each answer",
        "list-decoded": f"list of {PROCESSES} processes, sequential, client decodes each answer",
        "status-concurrent": f"status of 1 process, {CLIENTS} clients at once",
        "list-concurrent": f"list of {PROCESSES} processes, {CLIENTS} clients at once",
    }
    for key, label in labels.items():
        rate = {k: res[k][key]["rate"] for k in ("herder", "supervisord", "circus")}
        p50 = {k: res[k][key]["p50_ms"] for k in rate}
        out.append(
            Figure(
                bench="4",
                label=label,
                unit="requests/s",
                higher_is_better=True,
                herder=rate["herder"],
                supervisord=rate["supervisord"],
                circus=rate["circus"],
                reference=res["reference"][key]["rate"] if key in res["reference"] else None,
                reference_label="bare FastAPI GET /, sequential",
                goal=f"≥ {GOAL_FACTOR:g}x supervisord and ≥ Circus",
                met=rate["herder"] >= GOAL_FACTOR * rate["supervisord"] and rate["herder"] >= rate["circus"],
                note="p50 latency ms: " + ", ".join(f"{k} {v:.2f}" for k, v in p50.items()),
            )
        )
    return out


if __name__ == "__main__":
    harness.main_for(__doc__ or "", run)
