"""The families of the agent's ``GET /metrics`` (#16): processes, pools, sessions, RPC, HTTP.

Everything is read when Prometheus scrapes, from what the agent keeps anyway: the
supervisor's units (state, restarts, and ``Unit.figures()``, the same uptime, CPU and
RSS the status documents show, sampled at most once a second by ``usage.py``), the
router's pools (instances, requests in flight and waiting, cold starts, and the
``Buckets`` the proxy fills per response), the session manager's sessions, the RPC
registry's ``CallStats`` and the HTTP middleware's counts. A scrape costs a walk of those
(a few µs a process) and nothing between scrapes.

Processes are labelled by ``slug``; pools by ``pool``. Each process has one
``herder_process_state`` series per state (1 for the one it is in), so that a change of
state never makes a series vanish.

Imported on the first scrape (``herder.agent.metrics``): prometheus_client costs ~12 ms to
import, which an agent that is never scraped should not pay at its start.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from herder import __version__
from herder.agent.processes import State
from herder.agent.router.pools import InstanceState
from herder.metrics import Families, HttpCounts, histogram, http_families, rpc_families

if TYPE_CHECKING:
    from herder.agent.router import Router
    from herder.agent.server import AgentRuntime
    from herder.agent.sessions.manager import SessionManager


def families(runtime: AgentRuntime, http: HttpCounts | None) -> Families:
    """Every family of one scrape of the agent."""
    out = Families([_info()])
    out.add(*_processes(runtime))
    if runtime.router is not None:
        out.add(*_pools(runtime.router))
    if runtime.sessions is not None:
        out.add(_sessions(runtime.sessions))
    if runtime.rpc is not None:
        out.add(*rpc_families(runtime.rpc.registry.stats))
    if http is not None:
        out.add(*http_families(http.counts))
    return out


def _info() -> Metric:
    info = GaugeMetricFamily(
        "herder_build_info", "Always 1: which daemon, which version.", labels=["daemon", "version"]
    )
    info.add_metric(["agent", __version__], 1)
    return info


def _processes(runtime: AgentRuntime) -> list[Metric]:
    units = list(runtime.supervisor.units.values())
    by_state = Counter(unit.state.value for unit in units)
    total = GaugeMetricFamily("herder_processes", "Supervised processes, by state.", labels=["state"])
    state = GaugeMetricFamily(
        "herder_process_state", "1 for the state a process is in, 0 for the others.", labels=["slug", "state"]
    )
    restarts = CounterMetricFamily(
        "herder_process_restarts", "Times a process was restarted after it exited.", labels=["slug"]
    )
    uptime = GaugeMetricFamily(
        "herder_process_uptime_seconds",
        "How long the current run has lasted (absent: none runs).",
        labels=["slug"],
    )
    cpu = GaugeMetricFamily(
        "herder_process_cpu_percent",
        "CPU use of the process's main pid over the last second or so (100: one core busy).",
        labels=["slug"],
    )
    rss = GaugeMetricFamily(
        "herder_process_resident_memory_bytes", "Resident memory of the process's main pid.", labels=["slug"]
    )
    for name in State:
        total.add_metric([name.value], by_state.get(name.value, 0))
    for unit in units:
        slug = unit.slug
        for name in State:
            state.add_metric([slug, name.value], 1 if unit.state is name else 0)
        restarts.add_metric([slug], unit.restarts)
        uptime_s, usage = unit.figures()
        if uptime_s is not None:
            uptime.add_metric([slug], uptime_s)
        if usage.cpu_percent is not None:
            cpu.add_metric([slug], usage.cpu_percent)
        if usage.rss_bytes is not None:
            rss.add_metric([slug], usage.rss_bytes)
    return [total, state, restarts, uptime, cpu, rss]


def _pools(router: Router) -> list[Metric]:
    pools = list(router.pools.values())
    instances = GaugeMetricFamily(
        "herder_pool_instances", "A pool's instances, by state.", labels=["pool", "state"]
    )
    in_flight = GaugeMetricFamily(
        "herder_pool_requests_in_flight",
        "Requests an instance of the pool is answering now.",
        labels=["pool"],
    )
    waiting = GaugeMetricFamily(
        "herder_pool_requests_waiting",
        "Requests waiting for an instance to start or free up.",
        labels=["pool"],
    )
    cold = CounterMetricFamily(
        "herder_pool_cold_starts",
        "Instances started because requests waited with none free (not the minimum, not replacements).",
        labels=["pool"],
    )
    for pool in pools:
        by_state = Counter(inst.state.value for inst in pool.instances)
        for name in InstanceState:
            instances.add_metric([pool.name, name.value], by_state.get(name.value, 0))
        in_flight.add_metric([pool.name], sum(inst.in_flight for inst in pool.instances))
        waiting.add_metric([pool.name], pool.waiting)
        cold.add_metric([pool.name], pool.cold_starts)
    latency = histogram(
        "herder_pool_upstream_latency_seconds",
        "Time from a request sent to an instance to the last byte of its response, by pool.",
        ["pool"],
        (([pool.name], pool.latency) for pool in pools),
    )
    return [instances, in_flight, waiting, cold, latency]


def _sessions(sessions: SessionManager) -> Metric:
    family = GaugeMetricFamily(
        "herder_sessions", "Open sessions, by product and state.", labels=["product", "state"]
    )
    counts = Counter((session.product, session.state) for session in sessions.sessions.values())
    for (product, state), n in sorted(counts.items()):
        family.add_metric([product, state], n)
    return family
