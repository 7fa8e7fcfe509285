"""The manager's ``GET /metrics`` (#16), wired: the route, the HTTP counter, the counts.

Counted as it happens, in integers kept by the components that do it: work claimed for
workers (``Writes.claimed_total``: the rounds' claims and the explicit ones) and leases
lost (``LeaseKeeper.requeued_total``: work requeued or failed because its worker went
silent); a scrape reads them (``Counters``).

What a scrape answers is made by ``metric_families`` (docs/metrics.md lists it), imported
on the first scrape: prometheus_client costs ~12 ms to import. The route sits in the
manager's app, behind its front door: guarded like every other route.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from herder.metrics import HttpCounts

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.responses import Response

    from herder.manager.server import ManagerRuntime

METRICS_PATH = "/metrics"


@dataclass
class Counters:
    """What the manager counted as it happened, read at a scrape."""

    claims: int = 0
    leases_lost: int = 0
    schedule_runs: int = 0  # tasks submitted by schedules' runs (``Scheduler.fired_total``)


def install(app: FastAPI, runtime: ManagerRuntime) -> HttpCounts:
    """Add ``GET /metrics`` to ``app`` and start counting claims and lost leases.

    Returns the HTTP counter; the caller sets its ``app`` to the outermost app (the
    front door), so that every request is counted.
    """
    http = HttpCounts()

    async def metrics() -> Response:
        """The manager's metrics in Prometheus's text format (docs/metrics.md)."""
        from herder.manager.metric_families import families, read_database
        from herder.metrics import metrics_response

        figures = await read_database(runtime)
        counters = Counters(
            claims=runtime.writes.claimed_total,
            leases_lost=runtime.leases.requeued_total,
            schedule_runs=runtime.schedules.fired_total,
        )
        response: Response = metrics_response(families(runtime, counters, figures, http))
        return response

    app.add_api_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
    return http
