"""An operator's actions on a process: stop, start, restart (supervisorctl's verbs).

In the seed's URL style, each ``POST /<verb>-process/<slug>``, with no body or ``{}``,
answering the process's status document once the action is done (stopped; or on its
way: ``starting``, ``fetching`` for an app). Who may delete a process may act on it
(its owner, or an admin); another user's process is as absent as one that does not
exist (404).

* ``stop``: SIGTERM to its group, the grace, SIGKILL, as delete does; it stays listed as
  ``stopped``, is not started again by its policy nor by an agent restart (its record
  says so) until started. 409 if it is stopped already (supervisorctl: "not running").
* ``start``: runs a process that does not run (``stopped``, ``exited``, ``failed``).
  409 if it runs or is on its way (supervisorctl: "already started").
* ``restart``: stop if it runs, then start, from any state. Not a crash: the backoff and
  the crash loop are forgotten and ``restarts`` (the policy's restarts) is unchanged.

A pool's instance (``@<pool>.<n>``) is its pool's to start and stop: 409 naming the
pool's scale, which is how to have more or fewer of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from herder.agent.api.routes import _SLUG, _docs, _visible, base_url, status_document
from herder.agent.errors import Conflict
from herder.agent.models import DeleteRequest, ProcessStatus
from herder.apierrors import ApiError, read_json

if TYPE_CHECKING:
    from herder.agent.processes.supervisor import Unit
    from herder.agent.server import AgentRuntime

Action = Callable[[str], Awaitable["Unit"]]


def _operable(runtime: AgentRuntime, scope: Any, slug: str) -> Unit:
    """The process ``slug`` if the asker may act on it.

    Raises:
        ApiError: 409 ``pool_instance`` for a pool's instance.
        NotFound: no such process, or another user's.
    """
    router = runtime.router
    if slug.startswith("@") and router is not None:
        name = slug[1:].rsplit(".", 1)[0]
        pool = router.pools.get(name)
        if pool is not None and any(inst.unit.slug == slug for inst in pool.instances):
            raise ApiError(
                409,
                "pool_instance",
                f"{slug!r} is an instance of pool {name!r}, which starts and stops its instances: "
                f"scale the pool instead (POST /pools/{name}/scale)",
                "slug",
            )
    return _visible(runtime.supervisor, scope, slug)


def action_routes(runtime: AgentRuntime) -> APIRouter:
    """``POST /stop-process/{slug}``, ``/start-process/{slug}``, ``/restart-process/{slug}``."""
    router = APIRouter()
    sup = runtime.supervisor

    def add(path: str, summary: str, act: Action) -> None:
        async def route(request: Request) -> Response:
            slug = request.path_params["slug"]
            _operable(runtime, request.scope, slug)  # 404 (or 409) before looking at the body
            body = await request.body()
            if body.strip():
                await read_json(request, DeleteRequest)
            if runtime.stopping:
                raise ApiError(503, "stopping", "the agent is shutting down")
            try:
                # Shielded: a client that hangs up must not leave a process half-stopped.
                unit = await asyncio.shield(act(slug))
            except Conflict as exc:
                raise ApiError(409, "conflict", str(exc), "slug") from exc
            return JSONResponse(status_document(unit, base_url(request)))

        route.__name__ = path.replace("-", "_")
        route.__doc__ = summary
        router.add_api_route(
            f"/{path}/{{slug}}",
            route,
            methods=["POST"],
            summary=summary,
            openapi_extra=_docs(
                ProcessStatus,
                400,
                404,
                408,
                409,
                413,
                422,
                503,
                body=DeleteRequest,
                body_required=False,
                params=[_SLUG],
            ),
        )

    add(
        "stop-process",
        "Stop the process (SIGTERM, grace, SIGKILL) and keep it stopped, across agent restarts too, "
        "until started; 409 if stopped already",
        sup.stop,
    )
    add(
        "start-process",
        "Start a process that does not run (stopped, exited or failed); 409 if it runs already",
        sup.start,
    )
    add(
        "restart-process",
        "Stop the process if it runs, then start it (an operator's restart: no backoff)",
        sup.restart,
    )
    return router
