"""The router's two ways in, side by side: the pool's own address and the agent's port by Host.

    .venv/bin/python bench/router_paths.py               # 6 rounds of 5 s each way, alternated
    .venv/bin/python bench/router_paths.py --rounds 3 --seconds 3

``bench_router.py`` measures the pool's own address first, then the agent's port, once
each: a single pair of windows on a shared machine differs by more than the paths do
(issue 19: 51.9 against 44.7 µs of the router's CPU per request in one run). Here one
agent serves both, and the windows alternate (listen-host, host-listen, ...), so that
neither path always comes first after the pool's start or always meets the same load;
each window's router CPU per request (``/proc/PID/stat``), requests/s and the cores other
programs took are printed, then the median of each path. Before the windows, the
router's Python per request on each path without sockets (``profile_router_path.py``'s
harness: the same connection driven by hand, the by-Host one resolving its pool).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import bench_router as br
import harness
import profile_router_path as prp
from daemons import Herder

# What wrk sends on each path: to the pool's address, and to the agent's port by Host.
LISTEN_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8010\r\n\r\n"
HOST_HEAD = b"GET / HTTP/1.1\r\nHost: bench.localhost\r\n\r\n"
NUMBER = 20_000
BEST_OF = 7


def python_us(request: bytes, *, by_host: bool) -> float:
    """The router's Python per request (µs of this thread's CPU, best of ``BEST_OF``)."""
    client, upstream, transport = prp.connections()
    if by_host:  # as front.py hands it over: no pool of its own, each request's Host picks it
        pool = client.pool
        client.pool = None
        client._ctx.resolve = lambda host: pool

    def one() -> None:
        client.data_received(request)
        upstream.data_received(prp.RESPONSE)

    one()
    if not transport.last.endswith(br.BODY):
        raise SystemExit(f"unexpected answer {transport.last!r}")
    best = float("inf")
    for _ in range(BEST_OF):
        t0 = time.thread_time()
        for _ in range(NUMBER):
            one()
        best = min(best, (time.thread_time() - t0) / NUMBER)
    return best * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6, help="pairs of windows (default 6)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each window (default 5)")
    args = parser.parse_args()
    print(
        f"Python per request, no sockets: pool's own address {python_us(LISTEN_HEAD, by_host=False):.2f} µs, "
        f"by Host {python_us(HOST_HEAD, by_host=True):.2f} µs (best of {BEST_OF} x {NUMBER:,})",
        flush=True,
    )
    br.ATTEMPTS = 1  # every window counts: the alternation, not a retry, handles the noise
    tools = br.find_tools()
    per_path: dict[str, list[float]] = {"herder-listen": [], "herder-host": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        agent = Herder(work)
        pools = br.Pools(agent)
        try:
            agent.start()
            doc = pools.create(br.POOL, 1)
            backend = int(pools.wait_ready(br.POOL)["pid"])
            urls = {
                "herder-listen": doc["url"].rstrip("/") + "/",
                "herder-host": f"http://127.0.0.1:{agent.port}/",
            }
            headers = {"herder-listen": [], "herder-host": [f"Host: {br.HOST_HEADER}"]}
            for n in range(args.rounds):  # bounded: --rounds pairs
                order = ("herder-listen", "herder-host") if n % 2 == 0 else ("herder-host", "herder-listen")
                for target in order:
                    router = [agent.pid, *(p for p in harness.descendants(agent.pid) if not br.is_backend(p))]
                    res = br.run_wrk(
                        tools,
                        work,
                        target,
                        urls[target],
                        args.seconds,
                        headers=headers[target],
                        proxy_pids=router,
                        backend_pids=[backend],
                    )
                    per_path[target].append(res.proxy_us_per_request)
                    print(
                        f"round {n} {target:14s} {res.rate:9,.0f} req/s  "
                        f"router {res.proxy_us_per_request:5.1f} µs/request  "
                        f"backend {res.backend_us_per_request:5.1f}  others {res.others_busy:.2f} cores  "
                        f"load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
        finally:
            agent.stop()
            pools.cleanup()
    for target, values in per_path.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"{target}: router CPU µs/request median {statistics.median(values):.1f} ({shown})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
