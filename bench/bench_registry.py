"""Benchmark 10 (issue 7): the registry: queries, registrations, heartbeats, token verifications.

Real binaries only: ``herder keys init`` and ``herder keys issue --user bench --role admin``
in a temporary data dir, then ``herder manager --port 0`` on it (SQLite in the data dir,
auth on, as in production). The benchmark buys an access token with the key (``POST
/auth/token``) and every RPC link and HTTP request carries it. The manager is pinned to
CPU 0 for the whole run and the benchmark process (the client) to CPU 1, so that the
manager has exactly one core and the client does not take it. In the same run:

1. **Registrations.** 10,000 services ``register_service(key, url, metadata, ttl_s=30)``
   over 8 links (``connect(ws://…/rpc, token=…, codecs=("msgpack",))``), 32 calls in flight
   on each. Keys ``/user{u}/prod/svc{n}/1.{v}.0/eu/host{h}/id{i}``: 10 users x 100 names x
   5 versions x 2 hosts, so that a prefix ``/user{u}/prod/svc{n}`` matches exactly 10 of
   the 10,000. Registrations per second from the first call to the last answer.
2. **Queries.** p50/p99 of a query matching 10 of them, sequential (one at a time), 2,000
   timed after 200 of warm-up (500 and 50 with ``--quick``), the prefix rotating over 50
   names: ``find_services(prefix)`` over one RPC link, and ``GET /services?query=prefix``
   on one keep-alive connection (a lean raw HTTP/1.1 client); the same with a version
   range (``prefix/>=1.0,<2``, also 10). Every answer is checked (10 services under the
   prefix). For scale, the whole registry (``/*``, 10,000 services) a few times. Goal:
   p99 ≤ 10 ms.
3. **Heartbeats.** ``renew_service(id, 30)`` over the 10,000 ids in turn, as fast as the
   manager answers: 8 links, 64 calls in flight on each. After 2 s of warm-up, every
   renewal answered in a 10 s window (1 s and 4 s with ``--quick``): renewals/s, p50/p99
   of a call, the manager's CPU (every thread, ``/proc/PID/task/*/schedstat``) as a share
   of its one core, the client's beside it. Goal: ≥ 2,000 renewals/s on one core.
4. **Token verifications** in this process, with the manager's public keys from ``GET
   /auth/jwks.json`` (``herder.auth.public_keys_from_jwks``): ``herder.auth.tokens.verify``
   of one access token again and again (its signature cached after the first), and of
   5,000 distinct tokens (2,000 with ``--quick``) bought from the manager (``POST
   /auth/token``, 4 connections at once: purchases per second too), each verified once.
   Reference: the bare Ed25519 signature check (``cryptography``) of the same token.

Everything listens on 127.0.0.1 (the kernel picks the port); the manager is stopped by
its pid (SIGTERM, then SIGKILL after a deadline); every wait has a deadline; the temporary
directory is removed. The client's garbage collector is off while a clock runs (its
pauses would be counted as the manager's).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import itertools
import json
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import harness
from bench_manager import Http, ManagerProc, compile_bytecode, pin
from harness import VENV_BIN, Figure, cpu_seconds, machine_busy_seconds, percentile, schedstat_seconds

USERS = 10
NAMES = 100  # per user
VERSIONS = 5  # 1.0.0 .. 1.4.0
HOSTS = 2
SERVICES = USERS * NAMES * VERSIONS * HOSTS  # 10,000
MATCHES = VERSIONS * HOSTS  # under one /user{u}/prod/svc{n}
TTL_S = 30.0
REGISTER_LINKS = 8
REGISTER_IN_FLIGHT = 32  # per link
QUERIES = 2000
QUERIES_QUICK = 500
QUERY_WARMUP = 200
QUERY_WARMUP_QUICK = 50
QUERY_PREFIXES = 50  # the timed queries rotate over this many names
WHOLE_QUERIES = 5  # the whole registry, /*
RANGE = ">=1.0,<2"
RENEW_LINKS = 8
RENEW_IN_FLIGHT = 64  # per link (the manager refuses past 128 on one link)
RENEW_WARMUP_S = 2.0
RENEW_WARMUP_S_QUICK = 1.0
RENEW_SECONDS = 10.0
RENEW_SECONDS_QUICK = 4.0
TOKENS = 5000
TOKENS_QUICK = 2000
TOKEN_BUYERS = 4
CACHED_VERIFIES = 20000
CACHED_VERIFIES_QUICK = 5000
MANAGER_CPU = 0
CLIENT_CPU = 1
QUERY_P99_GOAL_MS = 10.0
RENEW_GOAL = 2000.0
STEP_TIMEOUT_S = 120.0  # any one phase
CLI_TIMEOUT_S = 60.0


# -- helpers ------------------------------------------------------------------------------


def run_loop(main: Awaitable[Any]) -> Any:
    """Run ``main`` on uvloop where installed (as herder's own clients do), within a deadline."""

    async def bounded() -> Any:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            return await main

    try:
        import uvloop
    except ImportError:
        return asyncio.run(bounded())
    return uvloop.run(bounded())


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The client's collector off while a clock runs: its pauses are not the manager's."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def service_key(index: int) -> str:
    """The key of service ``index`` (0 .. SERVICES-1): hosts vary fastest, then versions."""
    h, rest = index % HOSTS, index // HOSTS
    v, rest = rest % VERSIONS, rest // VERSIONS
    n, u = rest % NAMES, rest // NAMES
    return f"/user{u}/prod/svc{n}/1.{v}.0/eu/host{h}/id{index:05d}"


def service_id(index: int) -> str:
    return f"id{index:05d}"


def herder_cli(*args: str | Path) -> None:
    done = subprocess.run(
        [VENV_BIN / "herder", *map(str, args)], capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"herder {' '.join(map(str, args))}: exit {done.returncode}: {done.stderr}")


def get_request(host: str, path: str, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode()


def post_request(host: str, path: str, bearer: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {bearer}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def http_json(http: Http, request: bytes, what: str) -> Any:
    status, body = await http.send(request)
    if status != 200:
        raise RuntimeError(f"{what}: {status} {body[:300]!r}")
    return json.loads(body)


def waited_seconds(pid: int) -> float:
    """Time every thread of ``pid`` spent ready to run but waiting for a CPU: on a pinned
    process, what other programs took from its core."""
    return schedstat_seconds(pid, 1)


@dataclass
class Busy:
    """CPU over one timed stretch, each in one CPU's worth."""

    manager: float = 0.0
    waited: float = 0.0  # the manager ready to run while another program had its core
    client: float = 0.0  # this process
    others: float = 0.0  # every other program on the machine


class Meter:
    """Reads the CPU figures of ``Busy`` at ``start`` and again at ``read``."""

    def __init__(self, manager_pid: int) -> None:
        self.pid = manager_pid
        self.start()

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._cpu, self._waited = cpu_seconds(self.pid), waited_seconds(self.pid)
        self._own, self._machine = time.process_time(), machine_busy_seconds()

    def read(self) -> Busy:
        wall = time.perf_counter() - self._t0
        cpu, own = cpu_seconds(self.pid) - self._cpu, time.process_time() - self._own
        machine = machine_busy_seconds() - self._machine  # in clock ticks: coarse over short runs
        others = max(0.0, (machine - cpu - own) / wall)
        return Busy(cpu / wall, (waited_seconds(self.pid) - self._waited) / wall, own / wall, others)


@dataclass
class Latency:
    """What one timed series came to."""

    what: str
    transport: str
    query: str
    matches: int
    count: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    busy: Busy

    @classmethod
    def of(
        cls,
        what: str,
        transport: str,
        query: str,
        matches: int,
        timed: tuple[float, list[float], Busy],
    ) -> Latency:
        seconds, ms, busy = timed
        return cls(
            what,
            transport,
            query,
            matches,
            len(ms),
            seconds,
            percentile(ms, 50),
            percentile(ms, 90),
            percentile(ms, 99),
            max(ms),
            busy,
        )

    @property
    def rate(self) -> float:
        return self.count / self.seconds


# -- 1: registrations ---------------------------------------------------------------------


async def register_all(ws_url: str, token: str, manager_pid: int) -> Latency:
    from herder.rpc.client import connect

    todo = list(range(SERVICES))
    todo.reverse()  # popped from the end: in order
    ms: list[float] = []

    async def caller(peer: Any) -> None:
        clock = time.perf_counter
        while todo:
            i = todo.pop()
            metadata = {"weight": 1, "zone": f"eu-{i % HOSTS}"}
            t0 = clock()
            # A documentation address (TEST-NET-1): the proxy refuses loopback targets (#12 §1).
            url = f"http://192.0.2.{1 + i % 250}:{9000 + i % 1000}"
            doc = await peer.call("register_service", service_key(i), url, metadata, TTL_S)
            ms.append((clock() - t0) * 1e3)
            if doc["id"] != service_id(i):
                raise RuntimeError(f"register_service answered {doc!r} for {service_key(i)}")

    async with contextlib.AsyncExitStack() as stack:
        peers = [
            await stack.enter_async_context(connect(ws_url, token=token, codecs=("msgpack",)))
            for _ in range(REGISTER_LINKS)
        ]
        with no_gc():
            meter, t0 = Meter(manager_pid), time.perf_counter()
            await asyncio.gather(*(caller(p) for p in peers for _ in range(REGISTER_IN_FLIGHT)))
            seconds, busy = time.perf_counter() - t0, meter.read()
    what = f"{REGISTER_LINKS} links x {REGISTER_IN_FLIGHT} in flight"
    return Latency.of("register_service", what, "", 0, (seconds, ms, busy))


# -- 2: queries ---------------------------------------------------------------------------


def query_prefixes() -> list[str]:
    rng = random.Random(7)
    pairs = rng.sample([(u, n) for u in range(USERS) for n in range(NAMES)], QUERY_PREFIXES)
    return [f"/user{u}/prod/svc{n}" for u, n in pairs]


def check_found(services: Sequence[dict[str, Any]], prefix: str, expected: int) -> None:
    if len(services) != expected or not all(s["key"].startswith(prefix + "/") for s in services):
        keys = [s.get("key") for s in services[:3]]
        raise RuntimeError(f"query {prefix!r}: {len(services)} services (expected {expected}): {keys}...")


async def timed_series(
    ask: Callable[[str], Awaitable[list[dict[str, Any]]]],
    queries: Sequence[tuple[str, str]],
    warmup: int,
    expected: int,
    manager_pid: int,
) -> tuple[float, list[float], Busy]:
    """``ask`` each ``(query, prefix)`` in turn, ``warmup`` untimed first; (seconds, ms each, CPU)."""
    for query, prefix in queries[:warmup]:
        check_found(await ask(query), prefix, expected)
    ms: list[float] = []
    clock = time.perf_counter
    with no_gc():
        meter, t0 = Meter(manager_pid), clock()
        for query, prefix in queries[warmup:]:
            q0 = clock()
            found = await ask(query)
            ms.append((clock() - q0) * 1e3)
            check_found(found, prefix, expected)
        seconds, busy = clock() - t0, meter.read()
    return seconds, ms, busy


async def measure_queries(
    ws_url: str, port: int, token: str, manager_pid: int, count: int, warmup: int
) -> list[Latency]:
    from herder.rpc.client import connect

    prefixes = query_prefixes()
    rotation = list(itertools.islice(itertools.cycle(prefixes), warmup + count))
    series = {
        "prefix": [(p, p) for p in rotation],
        "version range": [(f"{p}/{RANGE}", p) for p in rotation],
    }
    out: list[Latency] = []
    host = f"127.0.0.1:{port}"
    async with connect(ws_url, token=token, codecs=("msgpack",)) as peer, Http(port) as http:

        async def rpc(query: str) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = await peer.call("find_services", query, SERVICES)
            return found

        async def rest(query: str) -> list[dict[str, Any]]:
            request = get_request(host, f"/services?query={quote(query, safe='/')}&limit={SERVICES}", token)
            doc = await http_json(http, request, f"GET /services?query={query}")
            found: list[dict[str, Any]] = doc["services"]
            return found

        for transport, ask in (("RPC find_services", rpc), ("GET /services", rest)):
            for what, queries in series.items():
                timed = await timed_series(ask, queries, warmup, MATCHES, manager_pid)
                q = Latency.of(what, transport, queries[0][0], MATCHES, timed)
                out.append(q)
                harness.progress(
                    f"registry: {transport}, {what} ({MATCHES} of {SERVICES:,}): p50 {q.p50_ms:.2f} ms, "
                    f"p99 {q.p99_ms:.2f} ms (the manager waited {q.busy.waited:.0%} of the time for its core)"
                )
        whole = [("/*", "")] * (WHOLE_QUERIES + 1)
        for transport, ask in (("RPC find_services", rpc), ("GET /services", rest)):
            timed = await timed_series(ask, whole, 1, SERVICES, manager_pid)
            out.append(Latency.of("the whole registry", transport, "/*", SERVICES, timed))
    return out


# -- 3: heartbeats ------------------------------------------------------------------------


@dataclass
class Renewals:
    links: int
    in_flight: int
    window_s: float
    renewals: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    busy: Busy
    errors: int
    first_errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.renewals / self.window_s

    @property
    def us_per_renewal(self) -> float:
        return self.busy.manager * self.window_s / max(1, self.renewals) * 1e6


async def measure_renewals(
    ws_url: str, token: str, manager_pid: int, warmup: float, seconds: float
) -> Renewals:
    from herder.rpc.client import connect

    ids = itertools.cycle([service_id(i) for i in range(SERVICES)])
    state = {"measuring": False, "stop": False, "done": 0, "errors": 0}
    ms: list[float] = []
    errors: list[str] = []

    async def caller(peer: Any) -> None:
        clock = time.perf_counter
        while not state["stop"]:
            id_ = next(ids)
            t0 = clock()
            try:
                doc = await peer.call("renew_service", id_, TTL_S)
            except Exception as exc:  # counted and reported: a renewal the manager refused
                state["errors"] += 1
                if len(errors) < 5:
                    errors.append(f"{id_}: {exc!r}")
                continue
            if state["measuring"]:
                ms.append((clock() - t0) * 1e3)
            state["done"] += 1
            if doc["id"] != id_:
                raise RuntimeError(f"renew_service({id_!r}) answered {doc!r}")

    async with contextlib.AsyncExitStack() as stack:
        peers = [
            await stack.enter_async_context(connect(ws_url, token=token, codecs=("msgpack",)))
            for _ in range(RENEW_LINKS)
        ]
        with no_gc():
            tasks = [asyncio.create_task(caller(p)) for p in peers for _ in range(RENEW_IN_FLIGHT)]
            try:
                await asyncio.sleep(warmup)
                state["measuring"] = True
                done0, errors0 = state["done"], state["errors"]
                meter, t0 = Meter(manager_pid), time.perf_counter()
                await asyncio.sleep(seconds)
                state["measuring"] = False
                done, errs = state["done"] - done0, state["errors"] - errors0
                busy, wall = meter.read(), time.perf_counter() - t0
                state["stop"] = True
                await asyncio.gather(*tasks)
            finally:
                state["stop"] = True
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    if not ms:
        raise RuntimeError(f"no renewal answered in the window: {errors}")
    return Renewals(
        links=RENEW_LINKS,
        in_flight=RENEW_IN_FLIGHT,
        window_s=wall,
        renewals=done,
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
        max_ms=max(ms),
        busy=busy,
        errors=errs,
        first_errors=errors,
    )


# -- 4: tokens ----------------------------------------------------------------------------


@dataclass
class Tokens:
    bought: int
    buy_seconds: float
    cached: int
    cached_seconds: float
    uncached: int
    uncached_seconds: float
    raw: int
    raw_seconds: float

    @property
    def buy_rate(self) -> float:
        return self.bought / self.buy_seconds

    @property
    def cached_rate(self) -> float:
        return self.cached / self.cached_seconds

    @property
    def uncached_rate(self) -> float:
        return self.uncached / self.uncached_seconds

    @property
    def raw_rate(self) -> float:
        return self.raw / self.raw_seconds


async def buy_tokens(port: int, key: str, count: int) -> tuple[list[str], float]:
    """``count`` distinct access tokens bought with ``key``, ``TOKEN_BUYERS`` at once; (them, seconds)."""
    request = post_request(f"127.0.0.1:{port}", "/auth/token", key)
    left = [count]
    bought: list[str] = []

    async def buyer(http: Http) -> None:
        while left[0] > 0:
            left[0] -= 1
            bought.append((await http_json(http, request, "POST /auth/token"))["token"])

    async with contextlib.AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(Http(port)) for _ in range(TOKEN_BUYERS)]
        with no_gc():
            t0 = time.perf_counter()
            await asyncio.gather(*(buyer(c) for c in conns))
            seconds = time.perf_counter() - t0
    if len(set(bought)) != count:
        raise RuntimeError(f"{count} tokens bought, {len(set(bought))} distinct")
    return bought, seconds


def measure_tokens(port: int, key: str, jwks_doc: Any, count: int, cached: int) -> Tokens:
    from herder.auth import public_keys_from_jwks, tokens
    from herder.manager.authority import ISSUER, TOKEN_AUDIENCE

    public_keys = public_keys_from_jwks(jwks_doc)
    bought, buy_seconds = run_loop(buy_tokens(port, key, count))
    revoked: frozenset[str] = frozenset()  # as the manager does: the revocation list is asked last
    options: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": TOKEN_AUDIENCE,
        "kinds": (tokens.KIND_TOKEN,),
        "is_revoked": revoked.__contains__,
    }
    verify = tokens.verify
    with no_gc():
        one = bought[0]
        verify(one, public_keys, **options)  # its signature is now cached
        t0 = time.perf_counter()
        for _ in range(cached):
            verify(one, public_keys, **options)
        cached_seconds = time.perf_counter() - t0
        distinct = bought[1:]
        t0 = time.perf_counter()
        for token in distinct:
            verify(token, public_keys, **options)
        uncached_seconds = time.perf_counter() - t0
        head, payload, signature = bought[-1].split(".")
        data, sig = (
            f"{head}.{payload}".encode("ascii"),
            base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
        )
        public = next(iter(public_keys.values()))
        t0 = time.perf_counter()
        for _ in range(len(distinct)):
            public.verify(sig, data)
        raw_seconds = time.perf_counter() - t0
    return Tokens(
        bought=count,
        buy_seconds=buy_seconds,
        cached=cached,
        cached_seconds=cached_seconds,
        uncached=len(distinct),
        uncached_seconds=uncached_seconds,
        raw=len(distinct),
        raw_seconds=raw_seconds,
    )


# -- the benchmark ------------------------------------------------------------------------


@dataclass
class Measured:
    quick: bool
    pinned: bool
    registrations: Latency | None = None
    manager_rss_mib: float = 0.0  # with the 10,000 services registered
    idle_rss_mib: float = 0.0  # before any
    queries: list[Latency] = field(default_factory=list)
    renewals: Renewals | None = None
    tokens: Tokens | None = None
    after: int = 0  # services still registered once the heartbeats stopped


def measure(quick: bool = False) -> Measured:
    count = QUERIES_QUICK if quick else QUERIES
    warmup = QUERY_WARMUP_QUICK if quick else QUERY_WARMUP
    pinned = (os.cpu_count() or 1) > 1
    m = Measured(quick, pinned)
    compile_bytecode()
    affinity = os.sched_getaffinity(0)
    with tempfile.TemporaryDirectory(prefix="herder-bench-registry-") as tmp:
        work = Path(tmp)
        manager = ManagerProc(work, "manager", None, heartbeat_interval_s=5.0)
        key_file = work / "admin.key"
        herder_cli("keys", "init", "--data-dir", manager.data_dir)
        admin = ("keys", "issue", "--user", "bench", "--role", "admin")
        herder_cli(*admin, "--data-dir", manager.data_dir, "--out", key_file)
        key = key_file.read_text().strip()
        try:
            manager.start()
            if pinned:
                pin(manager.pid, MANAGER_CPU)
                os.sched_setaffinity(0, {CLIENT_CPU})
            port, ws_url = manager.port, "ws" + manager.url[4:] + "/rpc"
            host = f"127.0.0.1:{port}"

            async def setup() -> tuple[str, Any, int]:
                async with Http(port) as http:
                    token = (
                        await http_json(http, post_request(host, "/auth/token", key), "POST /auth/token")
                    )["token"]
                    jwks_doc = await http_json(
                        http, get_request(host, "/auth/jwks.json", None), "GET /auth/jwks.json"
                    )
                    status, _ = await http.send(get_request(host, "/services?query=/user0", None))
                return token, jwks_doc, status

            token, jwks_doc, open_status = run_loop(setup())
            if open_status != 401:
                raise RuntimeError(
                    f"GET /services without a token answered {open_status}, not 401: is auth on?"
                )

            m.idle_rss_mib = harness.rss_bytes(manager.pid) / 2**20
            m.registrations = run_loop(register_all(ws_url, token, manager.pid))
            m.manager_rss_mib = harness.rss_bytes(manager.pid) / 2**20
            harness.progress(
                f"registry: {SERVICES:,} services registered at {m.registrations.rate:,.0f}/s "
                f"(manager {m.registrations.busy.manager:.0%} of its core, RSS {m.manager_rss_mib:.0f} MiB)"
            )
            m.queries = run_loop(measure_queries(ws_url, port, token, manager.pid, count, warmup))

            r_warmup = RENEW_WARMUP_S_QUICK if quick else RENEW_WARMUP_S
            r_seconds = RENEW_SECONDS_QUICK if quick else RENEW_SECONDS
            m.renewals = run_loop(measure_renewals(ws_url, token, manager.pid, r_warmup, r_seconds))
            r = m.renewals
            harness.progress(
                f"registry: {r.rate:,.0f} renewals/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, manager "
                f"{r.busy.manager:.0%} of its core (waited {r.busy.waited:.0%}), client {r.busy.client:.0%}, "
                f"errors {r.errors}"
            )

            async def count_all() -> int:
                async with Http(port) as http:
                    request = get_request(host, f"/services?query=/*&limit={SERVICES}", token)
                    return len((await http_json(http, request, "GET /services?query=/*"))["services"])

            m.after = run_loop(count_all())
            m.tokens = measure_tokens(
                port,
                key,
                jwks_doc,
                TOKENS_QUICK if quick else TOKENS,
                CACHED_VERIFIES_QUICK if quick else CACHED_VERIFIES,
            )
            t = m.tokens
            harness.progress(
                f"registry: token verifications {t.cached_rate:,.0f}/s cached, {t.uncached_rate:,.0f}/s "
                f"uncached (bare Ed25519 {t.raw_rate:,.0f}/s); {t.buy_rate:,.0f} tokens bought/s"
            )
        finally:
            manager.stop()
            os.sched_setaffinity(0, affinity)
    return m


def _margin_below(value: float, goal: float) -> str:
    return f"{goal / value:.1f}x under" if value <= goal else f"{value / goal:.1f}x over"


def figures(m: Measured) -> list[Figure]:
    common: dict[str, Any] = {"bench": "10", "supervisord": None, "circus": None}
    out: list[Figure] = []
    if m.registrations is not None:
        r = m.registrations
        out.append(
            Figure(
                label=f"register_service: {SERVICES:,} services, {r.transport}",
                unit="registrations/s",
                higher_is_better=True,
                herder=r.rate,
                note=(
                    f"{r.seconds:.1f} s; a call p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms; manager "
                    f"{r.busy.manager:.0%} of its core; RSS {m.manager_rss_mib:.0f} MiB with them all "
                    f"({m.idle_rss_mib:.0f} before)"
                ),
                **common,
            )
        )
    for q in m.queries:
        if q.matches != MATCHES:
            continue
        out.append(
            Figure(
                label=f"{q.transport}, {q.what} ({MATCHES} of {SERVICES:,}), one at a time: p99",
                unit="ms",
                higher_is_better=False,
                herder=q.p99_ms,
                goal=f"≤ {QUERY_P99_GOAL_MS:g} ms ({_margin_below(q.p99_ms, QUERY_P99_GOAL_MS)})",
                met=q.p99_ms <= QUERY_P99_GOAL_MS,
                note=(
                    f"{q.count:,} queries ({q.query} ...): p50 {q.p50_ms:.2f}, max {q.max_ms:.1f} ms, "
                    f"{q.rate:,.0f}/s; the manager waited {q.busy.waited:.0%} of the time for its core"
                ),
                **common,
            )
        )
    if m.renewals is not None:
        b = m.renewals
        ratio = b.rate / RENEW_GOAL
        margin = f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.0%} of it"
        out.append(
            Figure(
                label=f"renew_service (heartbeats), {b.links} links x {b.in_flight} in flight, on one core",
                unit="renewals/s",
                higher_is_better=True,
                herder=b.rate,
                goal=f"≥ {RENEW_GOAL:,.0f}/s on one core ({margin})",
                met=b.rate >= RENEW_GOAL and b.errors == 0,
                note=(
                    f"{b.renewals:,} in {b.window_s:.1f} s; p50 {b.p50_ms:.1f} ms, p99 {b.p99_ms:.1f} ms; "
                    f"manager {b.busy.manager:.0%} of its core ({b.us_per_renewal:.0f} µs each), client "
                    f"{b.busy.client:.0%} of another; {b.errors} errors"
                ),
                **common,
            )
        )
        out.append(
            Figure(
                label="renew_service (heartbeats): manager CPU",
                unit="% of one core",
                higher_is_better=False,
                herder=b.busy.manager * 100,
                note=f"{b.us_per_renewal:.0f} µs of manager CPU per renewal",
                **common,
            )
        )
    if m.tokens is not None:
        t = m.tokens
        out.append(
            Figure(
                label="tokens.verify of one access token, again and again (signature cached)",
                unit="verifications/s",
                higher_is_better=True,
                herder=t.cached_rate,
                note=f"{t.cached:,} verifications, {1e6 / t.cached_rate:.1f} µs each",
                **common,
            )
        )
        out.append(
            Figure(
                label=f"tokens.verify of {t.uncached:,} distinct access tokens (uncached)",
                unit="verifications/s",
                higher_is_better=True,
                herder=t.uncached_rate,
                reference=t.raw_rate,
                reference_label="bare Ed25519 verify",
                note=f"{1e6 / t.uncached_rate:.0f} µs each, of which {1e6 / t.raw_rate:.0f} the signature",
                **common,
            )
        )
        out.append(
            Figure(
                label=f"POST /auth/token: access tokens bought with a key, {TOKEN_BUYERS} at once",
                unit="tokens/s",
                higher_is_better=True,
                herder=t.buy_rate,
                note=f"{t.bought:,} tokens in {t.buy_seconds:.1f} s",
                **common,
            )
        )
    return out


def run(quick: bool = False) -> list[Figure]:
    return figures(measure(quick))


# -- detail tables ------------------------------------------------------------------------

BUSY = "busy: manager / waited / client / others"
QUERY_HEADER = (
    "transport",
    "query",
    "example",
    "matches",
    "timed",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "per s",
    BUSY,
)


def busy_cell(busy: Busy) -> str:
    return " / ".join(f"{x:.0%}" for x in (busy.manager, busy.waited, busy.client, busy.others))


def query_rows(m: Measured) -> list[tuple[str, ...]]:
    return [
        (
            q.transport,
            q.what,
            q.query,
            f"{q.matches:,}",
            f"{q.count:,}",
            f"{q.p50_ms:.2f}",
            f"{q.p90_ms:.2f}",
            f"{q.p99_ms:.2f}",
            f"{q.max_ms:.2f}",
            f"{q.rate:,.0f}",
            busy_cell(q.busy),
        )
        for q in m.queries
    ]


LOAD_HEADER = (
    "calls",
    "in flight",
    "count",
    "seconds",
    "per s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "manager µs per call",
    BUSY,
    "errors",
)


def load_rows(m: Measured) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    if m.registrations is not None:
        r = m.registrations
        rows.append(
            (
                "register_service",
                r.transport,
                f"{r.count:,}",
                f"{r.seconds:.2f}",
                f"{r.rate:,.0f}",
                f"{r.p50_ms:.1f}",
                f"{r.p99_ms:.1f}",
                f"{r.max_ms:.1f}",
                f"{r.busy.manager * r.seconds / r.count * 1e6:.0f}",
                busy_cell(r.busy),
                "0",
            )
        )
    if m.renewals is not None:
        b = m.renewals
        rows.append(
            (
                "renew_service",
                f"{b.links} links x {b.in_flight}",
                f"{b.renewals:,}",
                f"{b.window_s:.1f}",
                f"{b.rate:,.0f}",
                f"{b.p50_ms:.1f}",
                f"{b.p99_ms:.1f}",
                f"{b.max_ms:.1f}",
                f"{b.us_per_renewal:.0f}",
                busy_cell(b.busy),
                str(b.errors),
            )
        )
    return rows


def format_detail(m: Measured, markdown: bool = False) -> str:
    tables = [
        harness.rows_table(QUERY_HEADER, query_rows(m), markdown),
        harness.rows_table(LOAD_HEADER, load_rows(m), markdown),
    ]
    tail = (
        f"Services registered after the heartbeats: {m.after:,} of {SERVICES:,}. Busy: CPU in one "
        "core's worth over each timed stretch; waited: the manager ready to run while another "
        "program had its core (run-queue wait)."
    )
    if not m.pinned:
        tail += " One CPU only: the manager and the client shared it (not pinned)."
    return "\n\n".join([*tables, tail])


def main() -> int:
    parser = harness.report_parser(__doc__ or "", "fewer queries, a shorter heartbeat window (a smoke test)")
    args = parser.parse_args()
    t0 = time.monotonic()
    source = harness.source_state()
    m = measure(args.quick)
    harness.print_report(
        "herder registry benchmark", args, t0, source, figures(m), format_detail(m, args.markdown), asdict(m)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
