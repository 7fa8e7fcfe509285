"""HTTP requests counted by method, route template and status: a pure ASGI middleware.

It wraps the whole app, the front door included, so that refusals (401, 403, 413) are
counted too. The route is the template the router matched (``/processes/{slug}``),
read from the scope after the app ran (Starlette leaves the matched route there), never
the raw path: a client asking for a million made-up paths adds one series, ``unmatched``,
not a million. Methods outside the standard set are counted as ``other`` for the same
reason. WebSocket and lifespan traffic is passed through uncounted.

Per request: one closure around ``send`` and one dict increment, on the event loop's
thread (the only writer), so no lock.
"""

from __future__ import annotations

from typing import Any

Scope = dict[str, Any]
ASGIApp = Any

# Methods counted by name; any other (a client may send anything) is ``other``.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The route label of a request no route matched (404s, the door's refusals before routing).
UNMATCHED = "unmatched"
# The status label of a request whose app ended without starting a response.
NO_RESPONSE = 0


class HttpCounts:
    """The ASGI middleware, and the counts it keeps: ``counts[(method, route, status)]``.

    ``app`` may be set after construction (the ``/metrics`` route that reads the counts
    is installed in the app this wraps): calling it before is a bug.
    """

    def __init__(self, app: ASGIApp = None) -> None:
        self.app = app
        self.counts: dict[tuple[str, str, int], int] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = NO_RESPONSE

        async def watched(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            key = (method, route_template(scope), status)
            self.counts[key] = self.counts.get(key, 0) + 1


def route_template(scope: Scope) -> str:
    """The matched route's path template (a mount's prefix for what it serves), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED
