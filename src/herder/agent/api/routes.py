"""The agent's HTTP and WebSocket routes: the smartmob-agent seed's REST API.

URLs are the seed's (``/create-process``, ``/list-processes``, ``/process-status/<slug>``,
``/delete-process/<slug>``, ``/attach-console/<slug>``), and in its style herder's
operator actions (``/stop-process/<slug>``, ``/start-process/<slug>``,
``/restart-process/<slug>``); every document links to the next action with absolute
URLs built from the request's own ``Host``.

Request bodies are read as JSON whatever their content type, as the seed's client
posts JSON without ``application/json``; ``guard.py`` is what keeps that safe.
Every error has one shape: ``{"error": code, "message": ..., "field": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from herder import __version__, ui
from herder.agent.declared import is_declared
from herder.agent.errors import Conflict, NotFound
from herder.agent.models import (
    CreateRequest,
    DeleteRequest,
    Index,
    Info,
    Listing,
    ProcessSpec,
    ProcessStatus,
)
from herder.agent.processes.logs import Stream, Subscriber
from herder.agent.processes.states import State
from herder.agent.processes.supervisor import Unit
from herder.apierrors import ApiError, error_response, read_json
from herder.apierrors import install_error_handlers as install_common_handlers
from herder.net import http_url, rpc_url
from herder.openapi_docs import ApiDocs, Health
from herder.principals import may_see, principal_of, viewer_of
from herder.requestid import RequestId

if TYPE_CHECKING:
    from herder.agent.processes.supervisor import Supervisor
    from herder.agent.server import AgentRuntime

M = TypeVar("M", bound=BaseModel)

# Where the create's fast path (``api/fastcreate.py``) leaves the exception of a create it
# ran and that failed, for the route to answer (``create_document``).
CREATE_FAILED = "herder.create_failed"


# Path and query parameters are read from the request by hand and described here:
# declaring them as handler arguments makes FastAPI import pydantic.v1 at start-up
# (~27 ms and ~3 MiB), a tax on every agent start for no behaviour we use.
_SLUG = {
    "name": "slug",
    "in": "path",
    "required": True,
    "description": "'<app>.<node>', as in the process's links.",
    "schema": {"type": "string"},
}
# What each route takes and answers, for the OpenAPI document: routes return ready
# ``Response`` objects and parse bodies by hand, so FastAPI's ``response_model`` would
# only feed the docs, at ~3 ms of start-up per route (``herder.openapi_docs``). The front
# door's 401 and 403 may answer any route.
DOCS = ApiDocs(
    {
        400: "The body is not JSON.",
        401: "An auth token is configured and the request lacks it.",
        403: "Foreign Host or Origin.",
        404: "No process with that slug.",
        408: "The body did not arrive in time.",
        409: "A process with that slug exists; or the action does not apply to its state.",
        413: "The body is too large.",
        422: "A field is missing or wrong; 'field' names it.",
        503: "The agent is shutting down.",
    }
)
_docs = DOCS.operation


def status_document(unit: Unit, base: str) -> dict[str, Any]:
    """The Process status of ``unit``, with links under ``base`` (``http://host:port``).

    ``restart`` was the restart policy before there was a restart action, so the action's
    link is ``restart_process``; ``stop`` and ``start`` are named as ``delete`` is.
    """
    spec = unit.spec
    uptime_s, usage = unit.figures()
    doc: dict[str, Any] = {
        "app": spec.app,
        "node": spec.node,
        "slug": unit.slug,
        **_links(unit, base),
        "process_type": spec.process_type,
        "source_url": spec.source_url,
        "command": spec.command,
        "env": spec.env,
        "restart": spec.restart.value,
        "state": unit.state.value,
        "pid": unit.pid,
        "port": unit.port,
        "restarts": unit.restarts,
        "exit_code": unit.exit_code,
        "started_at": unit.started_at,
        "uptime_s": uptime_s,
        "cpu_percent": usage.cpu_percent,
        "rss_bytes": usage.rss_bytes,
        "created_at": spec.created_at,
        "error": unit.error,
        "health": None if unit.health is None else unit.health.document(),
        "depends_on": spec.depends_on,
        "waiting_for": unit.waiting_for,
        "declared": is_declared(spec),  # by the config file: a reload brings it back (docs/config.md)
    }
    if unit.build_log is not None:
        doc["build_log"] = f"{base}/build-log/{unit.slug}"
    return doc


async def create_document(sup: Supervisor, req: CreateRequest, scope: Any, base: str) -> dict[str, Any]:
    """The one create, of ``POST /create-process`` and of its fast path (``api/fastcreate.py``):
    start the process, record it durably, and return its status document under ``base``.

    A create the fast path ran and that failed is answered by the route, as if it had
    failed there: the fast path leaves the exception in the scope (``CREATE_FAILED``) and
    hands the request to the app, and the create raises it instead of running again.
    """
    failed = scope.pop(CREATE_FAILED, None)
    if failed is not None:
        raise failed
    # The request was validated as it was read: the spec takes its fields as they are
    # (validating them again cost as much as reading the request: #19).
    spec = ProcessSpec.model_construct(**dict(req), created_at=time.time(), owner=principal_of(scope)[0])
    unit = await sup.create(spec, viewer=viewer_of(scope))  # whose processes depends_on names
    return status_document(unit, base)


def _links(unit: Unit, base: str) -> dict[str, str]:
    """The status document's links under ``base``, made once per base URL and unit."""
    cached = unit.links
    if cached is not None and cached[0] == base:
        return cached[1]
    slug = unit.slug
    details = f"{base}/process-status/{slug}"
    links = {
        "attach": f"ws{base[4:]}/attach-console/{slug}",
        "details": details,
        "status": details,
        "delete": f"{base}/delete-process/{slug}",
        "stop": f"{base}/stop-process/{slug}",
        "start": f"{base}/start-process/{slug}",
        "restart_process": f"{base}/restart-process/{slug}",
    }
    unit.links = (base, links)
    return links


def base_url(request: Request | WebSocket) -> str:
    """``scheme://host[:port]`` as the client addressed us (ws schemes become http)."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return http_url(f"{request.url.scheme}://{host}")


def _attach_options(fmt: str | None, replay: str | None) -> tuple[str, bool]:
    """Validate attach's query parameters (read by hand: see ``_SLUG``)."""
    fmt = fmt or "json"
    if fmt not in ("json", "text"):
        raise ApiError(422, "invalid", f"format must be 'json' or 'text', not {fmt!r}", "format")
    flags = {None: True, "true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    key = replay.lower() if replay is not None else None
    if key not in flags:
        raise ApiError(422, "invalid", f"replay must be true or false, not {replay!r}", "replay")
    return fmt, flags[key]


def _frame(stream: Stream, line: bytes, fmt: str) -> str:
    text = line.decode("utf-8", "replace")
    if fmt == "text":
        return text if stream == Stream.STDOUT else f"{stream}: {text}"
    return json.dumps({"stream": str(stream), "line": text})


async def _pump(ws: WebSocket, sub: Subscriber, fmt: str) -> None:
    while (batch := await sub.get_batch()) is not None:
        lines, dropped = batch
        if dropped:
            note = f"{dropped} lines dropped: this reader is slower than the process"
            await ws.send_text(_frame(Stream.HERDER, note.encode(), fmt))
        for stream, line in lines:
            await ws.send_text(_frame(stream, line, fmt))


def build_app(runtime: AgentRuntime) -> FastAPI:
    """The FastAPI application of one agent."""
    app = FastAPI(
        title="herder agent",
        docs_url=None,  # served from local files: herder.ui.apidocs
        redoc_url=None,
        version=__version__,
        description="Run and supervise processes on this host (smartmob-agent's REST API).",
        lifespan=runtime.lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(RequestId)
    app.include_router(process_routes(runtime))
    app.include_router(host_routes(runtime))
    app.include_router(attach_routes(runtime))
    from herder.agent.api.pools import pool_routes  # it imports this module's helpers

    app.include_router(pool_routes(runtime))
    from herder.agent.api.actions import action_routes  # it imports this module's helpers

    app.include_router(action_routes(runtime))
    from herder.agent.api.reload import reload_routes  # it imports this module's helpers

    app.include_router(reload_routes(runtime))
    if runtime.rpc is not None:
        from herder.agent.api.rpc import RPC_PATH

        runtime.rpc.mount(app, RPC_PATH)
    DOCS.install(app)
    ui.install_api_pages(app, "herder agent")
    return app


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, answers the one error document."""
    install_common_handlers(app, {NotFound: (404, "not_found", "slug"), Conflict: (409, "conflict", "node")})


def _visible(sup: Any, scope: Any, slug: str) -> Unit:
    """The process ``slug``, if the asker may see it: another user's is as absent as one
    that does not exist (``NotFound``, 404)."""
    from herder.agent.errors import NotFound

    unit: Unit = sup.get(slug)
    if not may_see(scope, unit.spec.owner):
        raise NotFound(f"no process with slug {slug!r}")
    return unit


def process_routes(runtime: AgentRuntime) -> APIRouter:
    """The seed's index, listing, create, status and delete."""
    router = APIRouter()
    sup = runtime.supervisor

    @router.get("/", openapi_extra=_docs(Index), summary="Index: links to the available actions")
    async def index(request: Request) -> Response:
        base = base_url(request)
        return JSONResponse(
            {
                "create": f"{base}/create-process",
                "list": f"{base}/list-processes",
                "info": f"{base}/info",
                "pools": f"{base}/pools",
                "rpc": rpc_url(base),
                "reload": f"{base}/reload-config",
                "metrics": f"{base}/metrics",
            }
        )

    @router.get("/list-processes", openapi_extra=_docs(Listing), summary="Listing of every process")
    async def list_processes(request: Request) -> Response:
        base = base_url(request)
        units = [u for u in sup.units.values() if may_see(request.scope, u.spec.owner)]
        return JSONResponse({"processes": [status_document(u, base) for u in units]})

    @router.post(
        "/create-process",
        status_code=201,
        openapi_extra=_docs(
            ProcessStatus,
            400,
            408,
            409,
            413,
            422,
            503,
            status=201,
            body=CreateRequest,
            headers={"Location": "The process's status document (its 'details' link)."},
        ),
        summary="Create a process from an app (source_url + process_type) or a command",
    )
    async def create_process(request: Request) -> Response:
        if runtime.stopping:
            raise ApiError(503, "stopping", "the agent is shutting down")
        req = await read_json(request, CreateRequest)
        doc = await create_document(sup, req, request.scope, base_url(request))
        return JSONResponse(doc, status_code=201, headers={"Location": doc["details"]})

    @router.get(
        "/process-status/{slug}",
        openapi_extra=_docs(ProcessStatus, 404, params=[_SLUG]),
        summary="Process status",
    )
    async def process_status(request: Request) -> Response:
        slug = request.path_params["slug"]
        return JSONResponse(status_document(_visible(sup, request.scope, slug), base_url(request)))

    @router.post(
        "/delete-process/{slug}",
        openapi_extra=_docs(
            ProcessStatus, 400, 404, 408, 413, 422, body=DeleteRequest, body_required=False, params=[_SLUG]
        ),
        summary="Stop the process (SIGTERM, grace, SIGKILL) and forget it; answers once it is gone",
    )
    async def delete_process(request: Request) -> Response:
        slug = request.path_params["slug"]
        _visible(sup, request.scope, slug)  # 404 before looking at the body
        body = await request.body()
        if body.strip():
            await read_json(request, DeleteRequest)
        # Shielded: a client that hangs up must not leave a process half-stopped.
        unit = await asyncio.shield(sup.delete(slug))
        return JSONResponse(status_document(unit, base_url(request)))

    @router.get(
        "/build-log/{slug}",
        response_class=PlainTextResponse,  # for the document: the answer is built below
        openapi_extra=DOCS.text("Every line of the build.", 404, params=[_SLUG]),
        summary="The build log of the process's app (text): while it builds, once built, or failed",
    )
    async def build_log(request: Request) -> Response:
        slug = request.path_params["slug"]
        unit = _visible(sup, request.scope, slug)
        text = await read_build_log(unit.build_log, building=unit.state is State.BUILDING)
        if text is None:
            raise NotFound(f"process {slug!r} has no build log (its app was not built)")
        return PlainTextResponse(text)

    return router


async def read_build_log(log_file: Path | None, *, building: bool) -> str | None:
    """A build log's text; '' while a build has not written its first line; None if
    there is none (the app is not built, or its build was collected)."""
    if log_file is None:
        return None
    try:
        return await asyncio.to_thread(log_file.read_text, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "" if building else None


def host_routes(runtime: AgentRuntime) -> APIRouter:
    """The host's figures and liveness."""
    router = APIRouter()

    @router.get("/info", openapi_extra=_docs(Info), summary="This host's figures and the agent's version")
    async def info() -> Response:
        return JSONResponse(await runtime.sysinfo.collect(runtime.supervisor.running_count()))

    @router.get(
        "/healthz",
        openapi_extra=_docs(Health, public=True),
        summary="Liveness: 200 while the agent serves (no auth needed)",
    )
    async def healthz() -> Response:
        return JSONResponse({"ok": True})

    return router


def attach_routes(runtime: AgentRuntime) -> APIRouter:
    """The WebSocket that streams a process's output."""
    router = APIRouter()
    sup = runtime.supervisor

    @router.websocket("/attach-console/{slug}")
    async def attach(ws: WebSocket) -> None:
        """Stream output: recent lines first, then live ones, one line per text frame.

        Query parameters: ``format`` and ``replay``.
        ``format=json`` (default): ``{"stream": "stdout"|"stderr"|"herder", "line": ...}``.
        ``format=text``: stdout lines as they are, others prefixed ``stderr: `` or ``herder: ``.
        ``replay=false``: only live lines, not the recent ones.
        """
        slug = ws.path_params["slug"]
        try:
            format, replay = _attach_options(ws.query_params.get("format"), ws.query_params.get("replay"))
        except ApiError as exc:
            await ws.send_denial_response(error_response(exc.status, exc.code, str(exc), exc.field))
            return
        unit = sup.units.get(slug)
        if unit is not None and not may_see(ws.scope, unit.spec.owner):
            unit = None  # another user's process: as absent as one that does not exist
        if unit is None or unit.done:
            await ws.send_denial_response(
                error_response(404, "not_found", f"no process with slug {slug!r}", "slug")
            )
            return
        await ws.accept()
        sub = unit.output.subscribe(replay=replay)
        try:
            async with asyncio.TaskGroup() as tg:
                pump = tg.create_task(_pump(ws, sub, format))
                reader = tg.create_task(_until_disconnect(ws))
                # Whichever ends first ends the other: the process was deleted, or the
                # client went away.
                pump.add_done_callback(lambda _: reader.cancel())
                reader.add_done_callback(lambda _: pump.cancel())
        except* (WebSocketDisconnect, OSError):
            pass
        finally:
            unit.output.unsubscribe(sub)
        if ws.client_state.name == "CONNECTED":
            await ws.close(1000, "the process was deleted")

    return router


async def _until_disconnect(ws: WebSocket) -> None:
    """Read (and ignore) client frames until the client goes away."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
