"""What a registry's methods were asked: calls by method and outcome, and their durations.

Counted where a peer serves a call (``Peer._serve``, and notifications run inline), in
plain integers on the event loop's thread: a few dict operations per call, against a
round trip of tens of microseconds. ``herder.metrics`` turns them into Prometheus
families when ``/metrics`` is scraped.

The ``method`` label is bounded by what the registry holds: a call to a method it does
not have counts as ``unknown``, one to a target it forwards (a session) as
``forwarded``, so that a peer making up names cannot grow the label set.
"""

from __future__ import annotations

from herder.metrics import Buckets

# Labels for calls whose method is not one of the registry's own.
UNKNOWN = "unknown"
FORWARDED = "forwarded"
# Outcomes besides the wire's error codes (``ErrorCode`` values: ``invalid_params``...).
OK = "ok"
APPLICATION_ERROR = "application_error"  # the handler raised (as the wire code of that name)
RELAYED_ERROR = "remote_error"  # a third peer's error passed on


class CallStats:
    """Calls served, by (method, outcome), and how long each method took to answer."""

    __slots__ = ("calls", "durations")

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], int] = {}
        self.durations: dict[str, Buckets] = {}

    def record(self, method: str, outcome: str, elapsed_s: float | None) -> None:
        """Count one call; ``elapsed_s`` None for a notification run inline (not timed)."""
        key = (method, outcome)
        self.calls[key] = self.calls.get(key, 0) + 1
        if elapsed_s is not None:
            buckets = self.durations.get(method)
            if buckets is None:
                buckets = self.durations[method] = Buckets()
            buckets.observe(elapsed_s)
