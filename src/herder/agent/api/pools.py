"""The pools API: create, list, inspect, scale, drain, resume and delete pools.

Same conventions as the process routes (``api.py``): JSON bodies whatever their
content type, one error document, absolute links built from the request's ``Host``.
The index links ``pools``; each pool's document links its own actions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from herder.agent.api.deploys import deploy_fields, deploy_routes
from herder.agent.api.routes import DOCS, _docs, base_url, read_build_log
from herder.agent.errors import ConfigError, Conflict, NotFound
from herder.agent.processes.states import State
from herder.agent.router.models import DrainRequest, PoolListing, PoolSpec, PoolStatus, ScaleRequest
from herder.agent.router.pools import Pool
from herder.agent.router.router import ListenError, Router
from herder.apierrors import ApiError, read_json

if TYPE_CHECKING:
    from herder.agent.server import AgentRuntime

_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The pool's name.",
    "schema": {"type": "string"},
}


def pool_document(pool: Pool, base: str) -> dict[str, Any]:
    """A pool's document, with links under ``base`` (``http://host:port``)."""
    links = f"{base}/pools/{pool.name}"
    port = base.rsplit(":", 1)[1] if base.count(":") == 2 else "80"
    return {
        "name": pool.name,
        "spec": pool.spec.model_dump(mode="json"),
        "origin": pool.origin,
        "state": pool.state.value,
        "url": pool.url,
        "host": f"{pool.name}.localhost:{port}",
        "waiting": pool.waiting,
        "cold_starts": pool.cold_starts,
        "error": pool.error,
        "instances": [
            {
                "id": inst.id,
                "port": inst.port,
                "pid": inst.unit.pid,
                "state": inst.state.value,
                "version": inst.version,
                "process_state": inst.unit.state.value,
                "in_flight": inst.in_flight,
                "requests": inst.requests,
                "restarts": inst.unit.restarts,
                "started_at": inst.unit.started_at,
                "error": inst.unit.error,
            }
            for inst in pool.instances
        ],
        "details": links,
        "scale": f"{links}/scale",
        "drain": f"{links}/drain",
        "resume": f"{links}/resume",
        "delete": f"{links}/delete",
        **({"build_log": f"{links}/build-log"} if pool_build_log(pool) is not None else {}),
        **deploy_fields(pool, links),
    }


def pool_build_log(pool: Pool) -> Path | None:
    """The log of the pool's app build: its instances share one build, so any one's."""
    return next((inst.unit.build_log for inst in pool.instances if inst.unit.build_log), None)


async def _optional_body(request: Request, model: type[DrainRequest]) -> DrainRequest:
    body = await request.body()
    return await read_json(request, model) if body.strip() else model()


def pool_routes(runtime: AgentRuntime) -> APIRouter:
    """Routes under ``/pools``."""
    api = APIRouter()

    def router() -> Router:
        assert runtime.router is not None
        return runtime.router

    def get(name: str) -> Pool:
        try:
            return router().get(name)
        except NotFound as exc:
            raise ApiError(404, "not_found", str(exc), "name") from None

    @api.get("/pools", openapi_extra=_docs(PoolListing), summary="Every pool, with its instances")
    async def list_pools(request: Request) -> Response:
        base = base_url(request)
        return JSONResponse({"pools": [pool_document(p, base) for p in router().pools.values()]})

    @api.post(
        "/pools",
        status_code=201,
        openapi_extra=_docs(
            PoolStatus,
            400,
            408,
            409,
            413,
            422,
            503,
            status=201,
            body=PoolSpec,
            headers={"Location": "The pool's document (its 'details' link)."},
        ),
        summary="Create a pool of instances, reached on its listen address or by Host",
    )
    async def create_pool(request: Request) -> Response:
        if runtime.stopping:
            raise ApiError(503, "stopping", "the agent is shutting down")
        spec = await read_json(request, PoolSpec)
        try:
            pool = await router().create(spec)
        except ListenError as exc:
            raise ApiError(409, "conflict", str(exc), "listen") from None
        except Conflict as exc:
            raise ApiError(409, "conflict", str(exc), "name") from None
        except ConfigError as exc:
            raise ApiError(422, "invalid", str(exc), "listen") from None
        doc = pool_document(pool, base_url(request))
        return JSONResponse(doc, status_code=201, headers={"Location": doc["details"]})

    @api.get("/pools/{name}", openapi_extra=_docs(PoolStatus, 404, params=[_NAME]), summary="A pool")
    async def pool_status(request: Request) -> Response:
        return JSONResponse(pool_document(get(request.path_params["name"]), base_url(request)))

    _operation_routes(api, router, get)
    _build_log_route(api, get)
    deploy_routes(api, runtime, router, get, pool_document)
    return api


def _operation_routes(api: APIRouter, router: Callable[[], Router], get: Callable[[str], Pool]) -> None:
    """Scale, drain, resume, delete."""

    @api.post(
        "/pools/{name}/scale",
        openapi_extra=_docs(PoolStatus, 400, 404, 422, body=ScaleRequest, params=[_NAME]),
        summary="New bounds: start up to min_instances now, retire gracefully down to max_instances",
    )
    async def scale_pool(request: Request) -> Response:
        name = request.path_params["name"]
        get(name)
        req = await read_json(request, ScaleRequest)
        current = get(name).spec
        low = req.min_instances if req.min_instances is not None else current.min_instances
        high = req.max_instances if req.max_instances is not None else current.max_instances
        if low > high:
            raise ApiError(422, "invalid", "min_instances may not exceed max_instances", "min_instances")
        pool = await asyncio.shield(router().scale(name, req.min_instances, req.max_instances))
        return JSONResponse(pool_document(pool, base_url(request)))

    @api.post(
        "/pools/{name}/drain",
        openapi_extra=_docs(
            PoolStatus, 400, 404, 422, body=DrainRequest, body_required=False, params=[_NAME]
        ),
        summary="Stop taking requests, finish those in flight (bounded), stop every instance",
    )
    async def drain_pool(request: Request) -> Response:
        pool = get(request.path_params["name"])
        req = await _optional_body(request, DrainRequest)
        await asyncio.shield(pool.drain(req.timeout))
        return JSONResponse(pool_document(pool, base_url(request)))

    @api.post(
        "/pools/{name}/resume",
        openapi_extra=_docs(PoolStatus, 404, params=[_NAME]),
        summary="Take requests again after a drain",
    )
    async def resume_pool(request: Request) -> Response:
        pool = get(request.path_params["name"])
        pool.resume()
        return JSONResponse(pool_document(pool, base_url(request)))

    @api.post(
        "/pools/{name}/delete",
        openapi_extra=_docs(
            PoolStatus, 400, 404, 422, body=DrainRequest, body_required=False, params=[_NAME]
        ),
        summary="Drain the pool, stop it and forget it; answers once its instances are gone",
    )
    async def delete_pool(request: Request) -> Response:
        name = request.path_params["name"]
        get(name)
        req = await _optional_body(request, DrainRequest)
        pool = await asyncio.shield(router().delete(name, req.timeout))
        return JSONResponse(pool_document(pool, base_url(request)))


def _build_log_route(api: APIRouter, get: Callable[[str], Pool]) -> None:
    """The pool's build log, for ``herder pools create`` to show a build's progress."""

    @api.get(
        "/pools/{name}/build-log",
        response_class=PlainTextResponse,  # for the document: the answer is built below
        openapi_extra=DOCS.text("Every line of the build.", 404, params=[_NAME]),
        summary="The build log of the pool's app (text): while it builds, once built, or failed",
    )
    async def pool_build_log_text(request: Request) -> Response:
        name = request.path_params["name"]
        pool = get(name)
        building = any(inst.unit.state is State.BUILDING for inst in pool.instances)
        text = await read_build_log(pool_build_log(pool), building=building)
        if text is None:
            raise ApiError(404, "not_found", f"pool {name!r} has no build log (its app was not built)")
        return PlainTextResponse(text)
