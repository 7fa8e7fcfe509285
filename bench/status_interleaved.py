"""Benchmark 4's sequential requests on a busy machine: the daemons measured in turn, round
after round, with the CPU each side spends per request.

Why: ``bench_status.py`` measures herder, then supervisord, then Circus, a minute apart;
when other programs load the 2-core machine, the load moves between those minutes and the
ratios swing two or three times from run to run. Here the three daemons run at once and
take turns every second, so the load weighs on each alike, and each request's CPU time is
read from ``/proc/<pid>/stat`` (the daemon) and ``getrusage`` (the client, less its start-up
and warm-up, measured by a run of one request): CPU per request moves far less with the
load than requests per second.

``herder (FastAPI)`` is the same agent asked ``/list-processes?`` (the same answer; the
query keeps the request off the agent's fast path for status reads, so it takes FastAPI's
request path): the before and after of that fast path, in the same minute.

    .venv/bin/python bench/status_interleaved.py [--rounds 3] [--seconds 1]

Prints one line per request kind: the median rate, daemon and client CPU per request.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
from pathlib import Path

import bench_status as bs
from daemons import Circus, CircusBridge, Herder, Supervisord
from harness import BENCH_DIR, PEER_BIN, ChildWatcher

Row = tuple[float, float, float]  # requests/s, daemon µs/request, client µs/request


def ticks(pid: int) -> int:
    """CPU time of ``pid`` so far, in clock ticks (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one(argv: list[str], pid: int, seconds: float) -> Row:
    """One loadgen run against ``pid``'s daemon."""
    cmd = [str(PEER_BIN / "python"), str(BENCH_DIR / "loadgen.py"), *argv]
    c0 = children_cpu()
    subprocess.run([*cmd, "--seconds", "0.0001"], capture_output=True, check=True)  # start-up
    c1 = children_cpu()
    t0 = ticks(pid)
    out = subprocess.run([*cmd, "--seconds", str(seconds)], capture_output=True, text=True, check=True)
    t1 = ticks(pid)
    c2 = children_cpu()
    result = json.loads(out.stdout)
    n = result["requests"]
    daemon_us = (t1 - t0) / 100 / (n + 21) * 1e6  # 20 warm-up requests and the checked first
    client_us = max(0.0, (c2 - c1) - (c1 - c0)) / n * 1e6
    return n / result["seconds"], daemon_us, client_us


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="herder-bench-") as tmp:
        root = Path(tmp)
        bridge = CircusBridge(root)
        for name in ("h", "s", "c"):
            (root / name).mkdir()
        herder = Herder(root / "h")
        supervisord = Supervisord(root / "s", bs.programs())
        circus = Circus(root / "c", bs.programs(), bridge)
        watchers: list[ChildWatcher] = []
        try:
            herder.start()
            supervisord.start()
            circus.start()
            watchers.append(bs.with_processes(herder, lambda: [herder.create(p) for p in bs.programs()]))
            watchers.append(
                bs.with_processes(supervisord, lambda: supervisord.rpc().supervisor.startAllProcesses(True))
            )
            starts = [
                {"command": "start", "properties": {"name": p.name, "match": "simple", "waiting": True}}
                for p in bs.programs()
            ]
            watchers.append(bs.with_processes(circus, lambda: circus.call_many(starts)))
            target = f"127.0.0.1:{herder.port}"
            sock = supervisord.socket_path
            info = ["supervisor.getProcessInfo", "--params", '["p0"]']
            one_status = json.dumps({"command": "status", "properties": {"name": "p0"}})
            every_status = json.dumps({"command": "status", "properties": {}})
            requests = {
                "status": {
                    "herder": (["http", target, "/process-status/bench.p0"], herder.pid),
                    "herder (FastAPI)": (["http", target, "/process-status/bench.p0?"], herder.pid),
                    "supervisord": (["xmlrpc", sock, *info], supervisord.pid),
                    "circus": (["circus", circus.endpoint, one_status], circus.pid),
                },
                "list": {
                    "herder": (["http", target, "/list-processes"], herder.pid),
                    "herder (FastAPI)": (["http", target, "/list-processes?"], herder.pid),
                    "supervisord": (["xmlrpc", sock, "supervisor.getAllProcessInfo"], supervisord.pid),
                    "circus": (["circus", circus.endpoint, every_status], circus.pid),
                },
            }
            rows: dict[tuple[str, bool, str], list[Row]] = {}
            for _ in range(args.rounds):
                for op, by in requests.items():
                    for decode in (False, True):
                        for name, (argv, pid) in by.items():
                            row = one([*argv, *(["--decode"] if decode else [])], pid, args.seconds)
                            rows.setdefault((op, decode, name), []).append(row)
            for op, by in requests.items():
                for decode in (False, True):
                    print(f"{op}{', decoded' if decode else ''}:")
                    for name in by:
                        got = rows[(op, decode, name)]
                        rate, daemon, client = (median([r[i] for r in got]) for i in range(3))
                        cpu = f"daemon {daemon:5.0f} µs + client {client:5.0f} µs"
                        print(f"  {name:17} {rate:7,.0f}/s   {cpu}")
        finally:
            for watcher in watchers:
                watcher.cleanup()
            for daemon in (herder, supervisord, circus):
                daemon.stop()
            bridge.close()


if __name__ == "__main__":
    main()
