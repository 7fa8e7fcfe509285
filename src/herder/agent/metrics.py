"""The agent's ``GET /metrics`` (#16), wired: the route and the HTTP counter.

What a scrape answers is made by ``metric_families`` (docs/metrics.md lists it), imported
on the first scrape: prometheus_client costs ~12 ms to import, which an agent that is
never scraped should not pay at its start. The route sits in the agent's app, behind its
front door: guarded like every other route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.metrics import HttpCounts

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.responses import Response

    from herder.agent.server import AgentRuntime

METRICS_PATH = "/metrics"


def install(app: FastAPI, runtime: AgentRuntime) -> HttpCounts:
    """Add ``GET /metrics`` to ``app``; the HTTP counter whose ``app`` the caller sets to the
    outermost app (the front door), so that every request is counted."""
    http = HttpCounts()

    async def metrics() -> Response:
        """The agent's metrics in Prometheus's text format (docs/metrics.md)."""
        from herder.agent.metric_families import families
        from herder.metrics import metrics_response

        response: Response = metrics_response(families(runtime, http))
        return response

    app.add_api_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
    return http
