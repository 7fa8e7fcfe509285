"""The manager's ``GET /metrics`` (#16), wired: the route, the HTTP counter, the counts.

Counted as it happens, in integers (``Counters``): work claimed for workers (the rounds'
claims and the explicit ones) and leases lost (work the lease keeper requeued or failed
because its worker went silent). ``install`` wraps the two callables that report them,
so the components themselves know nothing of metrics.

What a scrape answers is made by ``metric_families`` (docs/metrics.md lists it), imported
on the first scrape: prometheus_client costs ~12 ms to import. The route sits in the
manager's app, behind its front door: guarded like every other route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herder.metrics import HttpCounts

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.responses import Response

    from herder.manager.server import ManagerRuntime

METRICS_PATH = "/metrics"


@dataclass
class Counters:
    """What the manager counts as it happens (one event loop: plain integers)."""

    claims: int = 0
    leases_lost: int = 0


def install(app: FastAPI, runtime: ManagerRuntime) -> HttpCounts:
    """Add ``GET /metrics`` to ``app`` and start counting claims and lost leases.

    Returns the HTTP counter; the caller sets its ``app`` to the outermost app (the
    front door), so that every request is counted.
    """
    http = HttpCounts()
    counters = Counters()
    _count_claims(runtime, counters)
    _count_lost_leases(runtime, counters)

    async def metrics() -> Response:
        """The manager's metrics in Prometheus's text format (docs/metrics.md)."""
        from herder.manager.metric_families import families, read_database
        from herder.metrics import metrics_response

        figures = await read_database(runtime)
        response: Response = metrics_response(families(runtime, counters, figures, http))
        return response

    app.add_api_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
    return http


def _count_claims(runtime: ManagerRuntime, counters: Counters) -> None:
    writes = runtime.writes
    pushed = writes.on_claimed
    claim = writes.claim

    async def on_claimed(rows: list[Any]) -> None:
        counters.claims += len(rows)
        if pushed is not None:
            await pushed(rows)

    async def counted_claim(worker_ids: list[int], most: int | None = None) -> list[Any]:
        rows = await claim(worker_ids, most)
        counters.claims += len(rows)
        return rows

    writes.on_claimed = on_claimed
    setattr(writes, "claim", counted_claim)  # noqa: B010  # an instance's method, wrapped


def _count_lost_leases(runtime: ManagerRuntime, counters: Counters) -> None:
    tick: Callable[[bool], Awaitable[int]] = runtime.leases.tick

    async def counted_tick(judge: bool) -> int:
        requeued = await tick(judge)
        counters.leases_lost += requeued
        return requeued

    setattr(runtime.leases, "tick", counted_tick)  # noqa: B010  # an instance's method, wrapped
