"""Benchmark 2's herder part, two source trees interleaved: rate, and the agent's CPU per process.

Usage: ``.venv/bin/python bench/diag/spawn_ab.py BEFORE_SRC AFTER_SRC [ROUNDS]``, each a
copy of ``src/`` (the agent is started from it by ``PYTHONPATH``). Each round runs both,
in alternating order, as ``bench_spawn.py`` does (200 creates over 4 keep-alive
connections, then until ``/proc`` and the API show all running); the agent's CPU is read
from ``/proc/PID/stat`` (every thread) and ``/proc/PID/task/PID/stat`` (the loop's
thread) around the timed part. On a loaded machine the rates swing between runs; the
CPU per process, and the two trees measured in the same minutes, are what compare.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_spawn import COUNT, HERDER_CONNECTIONS, sleepers
from daemons import Herder
from harness import ChildWatcher


def cpu_s(stat: str) -> float:
    with open(stat) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(src: str) -> tuple[float, float, float]:
    """Processes/s, agent CPU ms per process (all threads), and the loop thread's."""
    os.environ["PYTHONPATH"] = src
    with tempfile.TemporaryDirectory() as workdir:
        daemon = Herder(Path(workdir))
        daemon.start()
        daemon.processes()
        watcher = ChildWatcher(daemon.pid, "sleep")
        stat, main = f"/proc/{daemon.pid}/stat", f"/proc/{daemon.pid}/task/{daemon.pid}/stat"
        try:
            all0, main0, t0 = cpu_s(stat), cpu_s(main), time.perf_counter()
            daemon.create_many(sleepers(), HERDER_CONNECTIONS)
            deadline = t0 + 120
            while not (len(watcher.scan()) == COUNT and daemon.all_running(COUNT)):
                if time.perf_counter() > deadline:
                    raise TimeoutError("not all running in 120 s")
                time.sleep(0.001)
            elapsed = time.perf_counter() - t0
            used, used_main = cpu_s(stat) - all0, cpu_s(main) - main0
        finally:
            daemon.stop()
            watcher.cleanup()
    return COUNT / elapsed, used / COUNT * 1000, used_main / COUNT * 1000


def main() -> None:
    trees = {"before": sys.argv[1], "after": sys.argv[2]}
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
    print("load", os.getloadavg())
    for i in range(rounds):
        for name in list(trees) if i % 2 == 0 else list(trees)[::-1]:
            result = one(trees[name])
            results[name].append(result)
            rate, cpu, loop = result
            print(f"{name} {rate:.1f}/s, CPU per process {cpu:.2f} ms, on the loop {loop:.2f} ms", flush=True)
    for name, runs in results.items():
        rate, cpu, loop = (statistics.median(r[k] for r in runs) for k in range(3))
        print(f"{name} median: {rate:.1f}/s, CPU per process {cpu:.2f} ms, on the loop {loop:.2f} ms")
    print("load", os.getloadavg())


if __name__ == "__main__":
    main()
