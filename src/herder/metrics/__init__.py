"""Prometheus metrics shared by the agent and the manager (#16).

What is counted on a hot path is counted in plain integers by the code that owns it (a
pool's ``Buckets``, the RPC registry's ``CallStats``, the HTTP counts of ``HttpCounts``);
the text a scraper reads is made only when ``GET /metrics`` asks (``exposition``), from
those integers and from what the daemon already knows. Nothing here is a process-global
registry: each daemon answers for itself, even when a test runs several in one process.

* ``buckets``: ``Buckets``, a histogram as a list of integers (no lock, no labels);
* ``http``: ``HttpCounts``, the pure ASGI middleware counting requests by route template;
* ``exposition``: families from snapshots, and the ``/metrics`` answer.

The daemons' own collectors live with them (``herder.agent.metrics``,
``herder.manager.metrics``): they read their daemon's parts, which this package does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:  # what __getattr__ finds, for type checkers
    from herder.metrics.buckets import LATENCY_BOUNDS_S as LATENCY_BOUNDS_S
    from herder.metrics.buckets import Buckets as Buckets
    from herder.metrics.exposition import CONTENT_TYPE as CONTENT_TYPE
    from herder.metrics.exposition import Families as Families
    from herder.metrics.exposition import histogram as histogram
    from herder.metrics.exposition import http_families as http_families
    from herder.metrics.exposition import metrics_response as metrics_response
    from herder.metrics.exposition import rpc_families as rpc_families
    from herder.metrics.http import HttpCounts as HttpCounts

# Imported on first use: the router and the RPC layer take ``Buckets`` at import time,
# and must not pay for prometheus_client (only a scrape does).
_HOMES = {
    "Buckets": "buckets",
    "LATENCY_BOUNDS_S": "buckets",
    "CONTENT_TYPE": "exposition",
    "Families": "exposition",
    "histogram": "exposition",
    "http_families": "exposition",
    "metrics_response": "exposition",
    "rpc_families": "exposition",
    "HttpCounts": "http",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = list(_HOMES)
