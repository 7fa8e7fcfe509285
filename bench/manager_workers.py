"""Simulated workers for benchmark 9: many light clients of the manager's ``/rpc``, one process.

Run by ``bench_manager.py`` (one or a few of these at once), never on its own clock:

    python manager_workers.py --url ws://127.0.0.1:P/rpc --count 500 --prefix sim0 \\
        --offset 0 --total 1000 --warmup 2 --seconds 15 [--cpu 1]

Each simulated worker is what an agent started with ``--manager`` is to the manager, less
the work: one connection with ``connect(url, codecs=("msgpack",))``, ``register`` once
(a hostname of its own), then ``heartbeat(worker_id, figures, running)`` once a second
with the figures an agent sends and no running work. The workers' beats are spread
evenly over the second (worker ``offset + i`` of ``total`` beats at ``(offset + i) /
total`` s into each second), so that the manager sees a steady 1,000 beats/s rather than
bursts. A beat that takes longer than the interval delays the next one (never two at
once on one link), as in the agent.

Protocol with the benchmark, one JSON document per line on stdout:

1. ``{"ready": N, "connect_s": S}`` once every worker is linked and registered (at most
   ``--connect-concurrency`` connecting at once);
2. then it waits for a line on stdin (``go``), heartbeats ``--warmup`` s unmeasured and
   ``--seconds`` s measured (every round trip of a beat *sent* in the window, in µs),
   and prints ``{"latencies_us": [...], "cpu_s": ..., "seconds": ..., ...}``;
3. it closes every link and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import time
from typing import Any

INTERVAL_S = 1.0
FIGURES: dict[str, Any] = {
    "update_frequent": {
        "load_average": {"1min": 0.42, "5min": 0.37, "15min": 0.31},
        "worker_cpu_percent": 12.5,
    },
    "update_less_frequent": {
        "worker_architecture": "x86_64",
        "worker_disk_percent": 41.3,
        "worker_mem_percent": 37.9,
        "worker_num_cpus": 2,
    },
}


def say(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    from herder.rpc.client import connect
    from herder.rpc.peer import Peer

    loop = asyncio.get_running_loop()
    handlers = {"assign": lambda *a: None, "stop": lambda *a: None}  # never any work to run
    links: list[tuple[Peer, int]] = []
    gate = asyncio.Semaphore(args.connect_concurrency)

    async with contextlib.AsyncExitStack() as stack:

        async def link(index: int) -> None:
            async with gate:
                peer = await stack.enter_async_context(
                    connect(args.url, codecs=("msgpack",), handlers=handlers)
                )
                info = {
                    "hostname": f"{args.prefix}-{index}",
                    "system": "Linux bench",
                    "mac_address": f"{index:012x}",
                    "agent_url": "http://127.0.0.1:9",
                    "port": 9,
                    "slots": 1,
                    "tags": ["bench-sim"],
                }
                answer = await peer.call("register", info, timeout=60)
                links.append((peer, int(answer["worker_id"])))

        t0 = time.perf_counter()
        async with asyncio.timeout(args.connect_timeout):
            await asyncio.gather(*(link(args.offset + i) for i in range(args.count)))
        say({"ready": len(links), "connect_s": time.perf_counter() - t0})
        # The links live until the end: keep the collector from walking them again. Its
        # full passes over a thousand links stalled this client for up to 100 ms, which
        # it would have counted as the manager's round trip.
        gc.collect()
        gc.freeze()

        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "go":
            raise SystemExit(f"manager_workers: expected 'go', got {line!r}")
        start = loop.time()
        window_start = start + args.warmup
        window_end = window_start + args.seconds
        latencies: list[float] = []
        late = 0
        errors: list[str] = []
        cpu0: float | None = None

        async def beat(position: int, peer: Peer, worker_id: int) -> None:
            nonlocal late
            due = start + INTERVAL_S * position / args.total
            while due < window_end:
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    late += due >= window_start
                sent = time.perf_counter()
                sent_at = loop.time()
                try:
                    await peer.call("heartbeat", worker_id, FIGURES, [], timeout=30)
                except Exception as exc:  # counted and reported, the beats go on
                    errors.append(f"{type(exc).__name__}: {exc}")
                else:
                    if window_start <= sent_at < window_end:
                        latencies.append((time.perf_counter() - sent) * 1e6)
                due += INTERVAL_S

        async def cpu_at_window() -> None:
            nonlocal cpu0
            await asyncio.sleep(max(0.0, window_start - loop.time()))
            cpu0 = time.process_time()

        clock = loop.create_task(cpu_at_window())
        async with asyncio.timeout(args.warmup + args.seconds + 60):
            await asyncio.gather(*(beat(args.offset + i, p, w) for i, (p, w) in enumerate(links)))
        await clock
        cpu = time.process_time() - (cpu0 if cpu0 is not None else 0.0)
        wall = loop.time() - window_start
        say(
            {
                "latencies_us": [round(x, 1) for x in latencies],
                "cpu_s": cpu,
                "seconds": wall,
                "late": late,
                "errors": len(errors),
                "first_errors": errors[:5],
                "links": len(links),
            }
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="the manager's ws://host:port/rpc")
    parser.add_argument("--count", type=int, required=True, help="simulated workers in this process")
    parser.add_argument("--prefix", default="sim", help="their hostnames: PREFIX-N")
    parser.add_argument("--offset", type=int, default=0, help="the first worker's number (its beat's phase)")
    parser.add_argument("--total", type=int, default=0, help="workers over every process (phases)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of beats not measured")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of beats measured")
    parser.add_argument("--connect-concurrency", type=int, default=32)
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to that CPU")
    args = parser.parse_args()
    args.total = args.total or args.count
    return args


if __name__ == "__main__":
    options = parse_args()
    if options.cpu is not None:
        os.sched_setaffinity(0, {options.cpu})
    try:
        import uvloop

        uvloop.run(main(options))
    except ImportError:
        asyncio.run(main(options))
