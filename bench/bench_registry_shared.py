"""The registry shared by two managers on one PostgreSQL (#17): how soon B hears, what a renewal costs.

Real binaries only: two ``herder manager --port 0`` on one fresh PostgreSQL database
(``herder_bench_<random>``, dropped after), no keys (loopback). In one run:

1. **Propagation.** 300 registrations (100 with ``--quick``), one at a time, through A
   (``register_service(key, url, {}, 60)`` over one link), each timed from the call to
   the ``registered`` event on B's ``WS /services/watch``: p50, p99, max. The issue's
   bound is 1 s.
2. **Renewals through A, B following.** 2,000 services registered through A, then
   ``renew_service(id, 60)`` over 4 links x 64 in flight for 10 s (4 s with ``--quick``)
   after 2 s of warm-up: renewals/s, p50/p99 of a call, and the CPU of A (writing them)
   and of B (applying them from NOTIFY) per renewal, from ``/proc/PID/task/*/schedstat``.
   Then every id is looked up on B: each must carry A's last expiry (none missed).

Every process is stopped by its pid; every wait has a deadline. The machine is not
pinned: both managers, PostgreSQL and the client share its cores (busy figures say so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from bench_manager import ManagerProc

POSTGRES = os.environ.get("HERDER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
URL = "http://192.0.2.10:8080/"  # TEST-NET-1: an address the proxy allows, no name to resolve
TTL_S = 60.0
PROPAGATIONS, PROPAGATIONS_QUICK = 300, 100
SERVICES = 2_000
LINKS, IN_FLIGHT = 4, 64
WARMUP_S = 2.0
WINDOW_S, WINDOW_S_QUICK = 10.0, 4.0
EVENT_TIMEOUT_S = 10.0


def key(i: int) -> str:
    return f"/bench/prod/svc{i % 50}/1.0.0/eu/host{i % 7}/id{i}"


async def admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def propagation(a: str, b: str, count: int) -> dict[str, float]:
    """Seconds from a registration through A to B's watch event, ``count`` times."""
    import websockets

    from herder.rpc.client import connect

    seconds: list[float] = []
    watch = b.replace("http://", "ws://") + "/services/watch?query=/prop"
    async with websockets.connect(watch) as on_b, connect(a.replace("http://", "ws://") + "/rpc") as peer:
        for i in range(count):
            wanted = f"/prop/prod/svc/1.0.0/eu/host/p{i}"
            t0 = time.perf_counter()
            await peer.call("register_service", wanted, URL, {}, TTL_S)
            while True:
                event = json.loads(await asyncio.wait_for(on_b.recv(), EVENT_TIMEOUT_S))
                if event["event"] == "registered" and event["service"]["key"] == wanted:
                    break
            seconds.append(time.perf_counter() - t0)
    return {
        "count": count,
        "p50_ms": harness.percentile(seconds, 50) * 1e3,
        "p99_ms": harness.percentile(seconds, 99) * 1e3,
        "max_ms": max(seconds) * 1e3,
    }


async def renewals(a: str, b: str, a_pid: int, b_pid: int, window_s: float) -> dict[str, Any]:
    """Renew through A as fast as it answers; A's and B's CPU per renewal; B's view checked."""
    from herder.rpc.client import connect

    rpc = a.replace("http://", "ws://") + "/rpc"
    state = {"stop": False, "measuring": False, "done": 0}
    ms: list[float] = []
    last: dict[str, float] = {}
    ids = itertools.cycle([f"id{i}" for i in range(SERVICES)])

    async def caller(peer: Any) -> None:
        while not state["stop"]:
            id_ = next(ids)
            t0 = time.perf_counter()
            doc = await peer.call("renew_service", id_, TTL_S)
            last[id_] = max(last.get(id_, 0.0), doc["expires_at"])
            if state["measuring"]:
                ms.append((time.perf_counter() - t0) * 1e3)
                state["done"] += 1

    async with contextlib.AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(connect(rpc, codecs=("msgpack",))) for _ in range(LINKS)]
        for start in range(0, SERVICES, 256):
            await asyncio.gather(
                *(
                    peers[i % LINKS].call("register_service", key(i), URL, {"n": i}, TTL_S)
                    for i in range(start, min(SERVICES, start + 256))
                )
            )
        tasks = [asyncio.create_task(caller(p)) for p in peers for _ in range(IN_FLIGHT)]
        try:
            await asyncio.sleep(WARMUP_S)
            state["measuring"] = True
            cpu_a, cpu_b, t0 = harness.cpu_seconds(a_pid), harness.cpu_seconds(b_pid), time.perf_counter()
            await asyncio.sleep(window_s)
            state["measuring"] = False
            wall = time.perf_counter() - t0
            used_a, used_b = harness.cpu_seconds(a_pid) - cpu_a, harness.cpu_seconds(b_pid) - cpu_b
            done = state["done"]
        finally:
            state["stop"] = True
            await asyncio.gather(*tasks, return_exceptions=True)
    missed = await missed_on(b, last)
    return {
        "renewals": done,
        "per_s": done / wall,
        "p50_ms": harness.percentile(ms, 50),
        "p99_ms": harness.percentile(ms, 99),
        "a_us_per_renewal": used_a / max(1, done) * 1e6,
        "b_us_per_renewal": used_b / max(1, done) * 1e6,
        "a_core_share": used_a / wall,
        "b_core_share": used_b / wall,
        "missed_on_b": missed,
    }


async def missed_on(b: str, last: dict[str, float]) -> int:
    """How many ids B still shows with an expiry older than A's last answer (after 2 s)."""
    import httpx

    deadline = time.monotonic() + 2.0
    async with httpx.AsyncClient(base_url=b, timeout=30) as client:
        while True:
            answer = await client.get("/services", params={"query": "/bench", "limit": 10_000})
            seen = {s["id"]: s["expires_at"] for s in answer.json()["services"]}
            missed = sum(1 for id_, at in last.items() if seen.get(id_, 0.0) < at)
            if missed == 0 or time.monotonic() > deadline:
                return missed
            await asyncio.sleep(0.2)


async def measure(quick: bool) -> dict[str, Any]:
    database = f"herder_bench_{secrets.token_hex(4)}"
    await admin(f'CREATE DATABASE "{database}"')
    url = POSTGRES.rsplit("/", 1)[0] + f"/{database}"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-registry-shared-") as tmp:
            work = Path(tmp)
            a = ManagerProc(work, "a", url, heartbeat_interval_s=5.0)
            b = ManagerProc(work, "b", url, heartbeat_interval_s=5.0)
            try:
                a.start()
                b.start()
                harness.progress("registry-shared: two managers up; propagation")
                prop = await propagation(a.url, b.url, PROPAGATIONS_QUICK if quick else PROPAGATIONS)
                harness.progress(f"registry-shared: propagation p50 {prop['p50_ms']:.1f} ms; renewals")
                renew = await renewals(a.url, b.url, a.pid, b.pid, WINDOW_S_QUICK if quick else WINDOW_S)
            finally:
                a.stop()
                b.stop()
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {"propagation": prop, "renewals": renew}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer registrations, a shorter window")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    m = asyncio.run(measure(args.quick))
    p, r = m["propagation"], m["renewals"]
    print(
        f"register through A -> B's watch, {p['count']} one at a time: "
        f"p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms, max {p['max_ms']:.1f} ms"
    )
    print(
        f"renew_service through A, {LINKS} links x {IN_FLIGHT} in flight: {r['per_s']:,.0f}/s, "
        f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; CPU per renewal: "
        f"A {r['a_us_per_renewal']:.0f} µs ({r['a_core_share']:.0%} of a core), "
        f"B {r['b_us_per_renewal']:.0f} µs ({r['b_core_share']:.0%}); "
        f"ids B showed with an older expiry 2 s later: {r['missed_on_b']}"
    )
    if args.json:
        args.json.write_text(json.dumps(m, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
