"""The router's Python work per proxied request, without sockets (issue 19's profile).

    .venv/bin/python bench/profile_router_path.py            # µs of CPU per request
    .venv/bin/python bench/profile_router_path.py --profile  # and cProfile's table

A ``ClientConnection`` and an ``UpstreamConnection`` of a pool with one ready instance
are driven by hand: wrk's request head in, the backend's 13-byte answer (as
``http_backend.py`` sends it) back, over and over on one keep-alive pair. Their
transports only count what is written, so the figure is the Python of the data path
alone (parsing, rewriting, picking the instance, the bookkeeping), which ``perf`` cannot
split by function on Python 3.11; the kernel's share and uvloop's are what
``bench_router.py`` measures on top (a bare uvloop byte relay costs about 5 µs of user
time a request there). CPU time of this thread, best of 7 runs: the least disturbed by
other load on the machine.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from typing import Any

from herder.agent.router.client import ClientConnection, ProxyContext, ProxyLimits
from herder.agent.router.models import PoolSpec
from herder.agent.router.pools import Instance, InstanceState, Pool
from herder.agent.router.upstream import UpstreamConnection

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8010\r\n\r\n"  # what wrk sends
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, herder"
ROUNDS = 7
NUMBER = 20_000


class CountingTransport:
    """Takes what the proxy writes and keeps the last piece (to check the answer)."""

    def __init__(self, extra: dict[str, Any]) -> None:
        self.extra = extra
        self.last = b""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes) -> None:
        self.last = data

    def writelines(self, data: list[bytes]) -> None:
        self.last = b"".join(data)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        raise RuntimeError("the proxy closed a connection: the figure would not be of keep-alive requests")

    abort = close


class NoUnit:
    """What an ``Instance`` needs of its supervised unit here: somewhere to add a watcher."""

    def __init__(self) -> None:
        self.watchers: list[Any] = []


def connections() -> tuple[ClientConnection, UpstreamConnection, CountingTransport]:
    """A client connection to a pool whose one ready instance has one idle connection."""
    pool = Pool(PoolSpec(name="bench", command="true", min_instances=1), None, origin="api")  # type: ignore[arg-type]
    pool.watchers.append(lambda: None)  # the router's watcher
    instance = Instance("bench.1", NoUnit(), 8011)  # type: ignore[arg-type]
    instance.state = InstanceState.READY
    pool.instances.append(instance)
    pool._ready.append(instance)
    upstream = UpstreamConnection(instance)
    upstream.connection_made(CountingTransport({}))  # type: ignore[arg-type]
    instance.idle.append(upstream)
    context = ProxyContext(limits=ProxyLimits(), resolve=lambda host: None)
    transport = CountingTransport({"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8010)})
    client = ClientConnection(context, pool)
    client.connection_made(transport)  # type: ignore[arg-type]
    return client, upstream, transport


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", action="store_true", help="also print cProfile's table (slower)")
    args = parser.parse_args()
    client, upstream, transport = connections()

    def one() -> None:
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)

    one()
    if not transport.last.endswith(b"Hello, herder"):
        raise SystemExit(f"unexpected answer {transport.last!r}")
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.thread_time()
        for _ in range(NUMBER):
            one()
        best = min(best, (time.thread_time() - t0) / NUMBER)
    print(f"{best * 1e6:.2f} µs of CPU per request (best of {ROUNDS} x {NUMBER:,})")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(lambda: [one() for _ in range(NUMBER)])
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
