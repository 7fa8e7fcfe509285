"""The deploy routes of a pool: deploy a new version, promote its canaries, revert it.

Each answers the pool's document at once; the deploy goes on in the pool (its progress
is the document's ``deployment``, its end one of ``deployments``). They are pool
routes, with the same credentials as scale and delete: a deploy changes only what the
instances run (``DeployRequest``), which deleting the pool and creating it again could.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from herder.agent.api.routes import _docs, base_url
from herder.agent.errors import Conflict
from herder.agent.router.deploys import Deploys, deploys_of
from herder.agent.router.models import DeployRequest, PoolStatus
from herder.apierrors import ApiError, FieldError, read_json
from herder.openapi_docs import path_param

if TYPE_CHECKING:
    from herder.agent.router.pools import Pool
    from herder.agent.router.router import Router
    from herder.agent.server import AgentRuntime

_NAME = path_param("name", "The pool's name.")
_UNDER_WAY = (
    409,
    "A deploy is under way (promote or revert it, or wait for it to end); or the pool is drained.",
)


def deploy_fields(pool: Pool, links: str) -> dict[str, Any]:
    """The pool document's deploy part: its version, the deploy under way, the last ones, links."""
    deploys = pool.deploys
    current = deploys.current if deploys is not None else None
    return {
        "version": pool.version,
        "deployment": current.document() if current is not None else None,
        "deployments": [d.document() for d in deploys.history] if deploys is not None else [],
        "deploy": f"{links}/deploy",
        "promote": f"{links}/promote",
        "revert": f"{links}/revert",
    }


def deploy_routes(
    api: APIRouter,
    runtime: AgentRuntime,
    router: Callable[[], Router],
    get: Callable[[str], Pool],
    document: Callable[[Pool, str], dict[str, Any]],
) -> None:
    """``/pools/{name}/deploy``, ``/promote`` and ``/revert``."""

    def answer(request: Request, pool: Pool, status: int = 200) -> Response:
        return JSONResponse(document(pool, base_url(request)), status_code=status)

    @api.post(
        "/pools/{name}/deploy",
        status_code=202,
        openapi_extra=_docs(
            PoolStatus,
            400,
            404,
            _UNDER_WAY,
            413,
            422,
            503,
            status=202,
            body=DeployRequest,
            body_required=False,
            params=[_NAME],
            headers={"Location": "The pool's document, where the deploy's progress is."},
        ),
        summary="Roll out a new version: new instances batch by batch, old ones drained; rolled back "
        "if unhealthy",
    )
    async def deploy_pool(request: Request) -> Response:
        if runtime.stopping:
            raise ApiError(503, "stopping", "the agent is shutting down")
        pool = get(request.path_params["name"])
        body = await request.body()
        req = await read_json(request, DeployRequest) if body.strip() else DeployRequest()
        try:
            deploys_of(pool).start(req, router().record)
        except FieldError as exc:
            raise ApiError(422, "invalid", str(exc), exc.field) from None
        except Conflict as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        doc = document(pool, base_url(request))
        return JSONResponse(doc, status_code=202, headers={"Location": doc["details"]})

    actions: tuple[tuple[str, int, str, str, Callable[[Deploys], object]], ...] = (
        (
            "promote",
            200,
            "No deploy awaits promotion (or its canaries are not healthy yet).",
            "Promote the canaries of the deploy under way: it goes on to replace the old instances",
            Deploys.promote,
        ),
        (
            "revert",
            202,
            "No deploy is under way (or it has replaced every instance, or is rolling back already).",
            "Abandon the deploy under way and roll back to the old version",
            Deploys.revert,
        ),
    )
    for verb, status, conflict, summary, act in actions:
        _action_route(api, get, answer, verb, status, conflict, summary, act)


def _action_route(
    api: APIRouter,
    get: Callable[[str], Pool],
    answer: Callable[[Request, Pool, int], Response],
    verb: str,
    status: int,
    conflict: str,
    summary: str,
    act: Callable[[Deploys], object],
) -> None:
    """``POST /pools/{name}/<verb>``: ``act`` on the pool's deploys, answer its document."""

    async def deploy_action(request: Request) -> Response:
        pool = get(request.path_params["name"])
        try:
            act(deploys_of(pool))
        except Conflict as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        return answer(request, pool, status)

    api.post(
        f"/pools/{{name}}/{verb}",
        name=f"{verb}_pool",
        status_code=status,
        openapi_extra=_docs(PoolStatus, 404, (409, conflict), status=status, params=[_NAME]),
        summary=summary,
    )(deploy_action)
