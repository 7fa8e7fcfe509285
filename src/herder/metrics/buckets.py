"""A histogram kept as integers: what a hot path can afford per observation.

A ``prometheus_client.Histogram`` takes a lock and walks its buckets in Python for every
``observe``; the router serves a request in ~45 µs of CPU, and that would be a visible
share of it. ``Buckets.observe`` is one ``bisect`` and two additions on the event loop's
thread (nothing else touches it), and the cumulative counts Prometheus wants are made
at scrape time (``exposition.histogram``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Seconds: from a loopback answer (~100 µs) to a slow page (10 s). Upper bounds, as
# Prometheus's ``le``; above the last one is the +Inf bucket.
LATENCY_BOUNDS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Buckets:
    """Counts of observations per bucket, and their sum; not cumulative, not thread-safe.

    ``counts[i]`` holds the observations ``v`` with ``bounds[i-1] < v <= bounds[i]``;
    the last element those above every bound. Written by one thread (the event loop's).
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BOUNDS_S) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must be increasing and distinct")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (seconds, bytes: whatever the bounds are in)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """How many observations there were."""
        return sum(self.counts)
