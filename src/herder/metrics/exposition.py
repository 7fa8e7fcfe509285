"""Prometheus families from the daemons' own counts, and the ``/metrics`` answer.

A scrape builds its families from a snapshot (``prometheus_client``'s ``*MetricFamily``
objects) and encodes them with ``generate_latest``: no metric object lives between
scrapes, and no process-global registry is used (two daemons in one process, as in the
tests or ``herder up``, each answer for themselves).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from herder.metrics.buckets import Buckets

# The text format every Prometheus reads (2.x and 3.x); herder's names and labels are
# plain ASCII, so the output is the same in the newer 1.0.0 format prometheus_client
# announces by default.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Families:
    """The families of one scrape: what ``generate_latest`` takes as a registry."""

    def __init__(self, families: Iterable[Metric] = ()) -> None:
        self._families = list(families)

    def add(self, *families: Metric) -> None:
        self._families.extend(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)

    def encode(self) -> bytes:
        """The text exposition format (version 0.0.4)."""
        return generate_latest(self)


def histogram(
    name: str, documentation: str, labels: Sequence[str], series: Iterable[tuple[Sequence[str], Buckets]]
) -> HistogramMetricFamily:
    """A histogram family from ``Buckets`` (made cumulative here, with ``+Inf``)."""
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for values, buckets in series:
        counts = list(buckets.counts)
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(buckets.bounds, counts, strict=False):
            running += count
            cumulative.append((_bound(bound), running))
        running += counts[-1]
        cumulative.append(("+Inf", running))
        family.add_metric(list(values), cumulative, buckets.sum)
    return family


def _bound(value: float) -> str:
    return repr(float(value))


def rpc_families(stats: Any) -> list[Metric]:
    """``herder_rpc_calls_total`` and ``herder_rpc_call_duration_seconds`` of a ``CallStats``."""
    calls = CounterMetricFamily(
        "herder_rpc_calls",
        "RPC calls this daemon served, by method and outcome (ok or the wire's error code).",
        labels=["method", "outcome"],
    )
    for (method, outcome), n in sorted(stats.calls.items()):
        calls.add_metric([method, outcome], n)
    durations = histogram(
        "herder_rpc_call_duration_seconds",
        "Time from an RPC call's arrival to its answer being ready, by method.",
        ["method"],
        (([method], buckets) for method, buckets in sorted(stats.durations.items())),
    )
    return [calls, durations]


def http_families(counts: Mapping[tuple[str, str, int], int]) -> list[Metric]:
    """``herder_http_requests_total`` from ``HttpCounts.counts``."""
    family = CounterMetricFamily(
        "herder_http_requests",
        "HTTP requests answered, by method, route template (unmatched: no route) and status.",
        labels=["method", "route", "status"],
    )
    for (method, route, status), n in sorted(counts.items()):
        family.add_metric([method, route, str(status)], n)
    return [family]


def metrics_response(families: Families) -> Any:
    """The ``GET /metrics`` answer: a Starlette ``Response`` in the text format."""
    from starlette.responses import Response

    return Response(families.encode(), media_type=CONTENT_TYPE)
