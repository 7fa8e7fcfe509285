"""The create's two paths in one agent, interleaved: the fast path and FastAPI's ('?').

Usage: ``.venv/bin/python bench/diag/create_paths.py [ROUNDS] [BATCH]``. One agent (this
checkout); each round creates BATCH ``sleep`` processes over 4 keep-alive connections as
``bench_spawn.py`` does, once as ``POST /create-process`` (the fast path) and once as
``POST /create-process?`` (a query: FastAPI's path, the same create), in alternating
order, waits until all run, and deletes them outside the timed part. The agent's CPU per
create (every thread, and the loop's thread, from ``/proc``) is compared within the same
minutes, on the same agent: what differs is the request's path alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from spawn_ab import cpu_s

from bench_spawn import HERDER_CONNECTIONS
from daemons import Herder, Program
from harness import SLEEP


def create_many(daemon: Herder, programs: list[Program], connections: int, path: str) -> None:
    """``Herder.create_many``'s raw client, to ``path``."""
    requests = []
    for program in programs:
        body = json.dumps(daemon.create_body(program)).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\nContent-Length: {len(body)}\r\n\r\n"
        requests.append(head.encode() + body)
    requests.reverse()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        try:
            while requests:
                writer.write(requests.pop())
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                assert length is not None
                body = await reader.readexactly(int(length.group(1)))
                if not head.startswith(b"HTTP/1.1 201 "):
                    raise RuntimeError(f"create: {head[:40]!r} {body[:300]!r}")
        finally:
            writer.close()
            await writer.wait_closed()

    async def run() -> None:
        async with asyncio.timeout(120):
            await asyncio.gather(*(worker() for _ in range(connections)))

    asyncio.run(run())


def batch(daemon: Herder, paths: str, names: list[str]) -> tuple[float, float, float]:
    """Create ``names``; (seconds, CPU s of every thread, CPU s of the loop's thread)."""
    stat, main = f"/proc/{daemon.pid}/stat", f"/proc/{daemon.pid}/task/{daemon.pid}/stat"
    programs = [Program(name, [SLEEP, "1000"]) for name in names]
    all0, main0, t0 = cpu_s(stat), cpu_s(main), time.perf_counter()
    create_many(daemon, programs, HERDER_CONNECTIONS, paths)
    deadline = t0 + 120
    while not daemon.all_running(len(names)):
        if time.perf_counter() > deadline:
            raise TimeoutError("not all running in 120 s")
        time.sleep(0.001)
    return time.perf_counter() - t0, cpu_s(stat) - all0, cpu_s(main) - main0


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    results: dict[str, list[tuple[float, float, float]]] = {"fast": [], "fastapi": []}
    print("load", os.getloadavg())
    with tempfile.TemporaryDirectory() as workdir:
        daemon = Herder(Path(workdir))
        daemon.start()
        try:
            daemon.processes()
            for i in range(rounds):
                for kind in ("fast", "fastapi") if i % 2 == 0 else ("fastapi", "fast"):
                    names = [f"{kind}{i}x{n:03d}" for n in range(size)]
                    path = "/create-process" if kind == "fast" else "/create-process?"
                    took, cpu, loop = batch(daemon, path, names)
                    results[kind].append((size / took, cpu / size * 1000, loop / size * 1000))
                    rate, per, per_loop = results[kind][-1]
                    print(f"{kind}: {rate:.1f}/s, CPU per create {per:.2f} ms, on the loop {per_loop:.2f} ms")
                    for name in names:
                        daemon.delete(name)
        finally:
            daemon.stop()
    for kind, runs in results.items():
        rate, per, per_loop = (statistics.median(r[k] for r in runs) for k in range(3))
        print(f"{kind} median: {rate:.1f}/s, CPU per create {per:.2f} ms, on the loop {per_loop:.2f} ms")
    print("load", os.getloadavg())


if __name__ == "__main__":
    main()
