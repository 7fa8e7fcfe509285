"""The manager's REST API: the Manager API seed's workers and tasks, and workers' reports.

Seed routes: ``POST/GET /workers``, ``GET/PATCH /workers/{id}``, ``POST/GET /tasks``,
``GET/PATCH/DELETE /tasks/{id}``. herder adds ``POST /work-items/{id}/started|progress|
finished``, with which a worker reports on the piece of work it was handed (the seed's
pull path hands it out in ``PATCH /workers/{id}``'s answer), fenced by attempt.

Errors use the one error document (``herder.apierrors``), as the agent's do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.convertors import Convertor, register_url_convertor

from herder import __version__, ui
from herder.apierrors import ApiError, error_response, install_error_handlers, read_json
from herder.manager.documents import item_document
from herder.manager.errors import Conflict, ManagerError, NotFound
from herder.manager.models import (
    MAX_ID,
    FinishedReport,
    ProgressReport,
    TaskSubmission,
    TaskUpdate,
    WorkerRegistration,
    WorkerUpdate,
    WorkReport,
)
from herder.manager.output import offer
from herder.manager.outputshare import LineOrder, waited_for
from herder.manager.schedules import routes as schedule_routes
from herder.manager.states import TERMINAL, TaskStatus
from herder.manager.store import logs as item_logs
from herder.manager.store import queries
from herder.manager.store.heartbeats import Beat
from herder.manager.store.reports import Finished, Report
from herder.manager.store.tables import Task, Worker, WorkItem
from herder.openapi_docs import ApiDocs, Health, path_param, query_param
from herder.principals import principal_of, viewer_of
from herder.requestid import RequestId

if TYPE_CHECKING:
    from herder.manager.output import Reader
    from herder.manager.outputshare import Follow
    from herder.manager.server import ManagerRuntime

# How many tasks one page of GET /tasks holds, unless ?limit= says otherwise, and at most.
DEFAULT_TASKS_PAGE = 1000
MAX_TASKS_PAGE = 10_000
TASK_STATUSES = tuple(status.value for status in TaskStatus)  # the order of GET /tasks/counts

# How often a log stream checks whether its task ended without this manager seeing it.
LOG_STATUS_CHECK_S = 1.0

# What each route takes and answers, for the OpenAPI document (built when it is asked for).
DOCS = ApiDocs(
    {
        400: "The body is not JSON, or nests too deep.",
        401: "The manager has keys and the request lacks a valid token.",
        403: "Foreign Host or Origin, or the key's user may not do this.",
        404: "No such thing, or another user's.",
        408: "The body did not arrive in time.",
        409: "It cannot change now: 'field' says why.",
        413: "The body is too large.",
        422: "A field or parameter is missing or wrong; 'field' names it.",
        502: "The service did not answer, or its name does not resolve.",
    },
    answers="herder.manager.answers",  # the answers' models: imported when the document is built
)
BODY_ERRORS = (400, 408, 413, 422)  # any route that reads a body may answer these
_ID = path_param(
    "id", "A number, as in the documents' 'id'.", {"type": "integer", "minimum": 0, "maximum": MAX_ID}
)
_WORKER_404 = (404, "No worker with that id.")
_TASK_404 = (404, "No task with that id, or another user's.")
_ITEM_ERRORS = (
    (403, "Not an admin's key: workers report with an admin's key."),
    (404, "No work item with that id."),
    (409, "The report names an attempt that is not the item's current one ('fenced')."),
)


def worker_summary(worker: Worker, current_task: int | None, offline_after_s: float) -> dict[str, Any]:
    """The seed's worker properties (``GET /workers``), with herder's additions."""
    online = time.time() - worker.last_seen <= offline_after_s
    return {
        "activity": worker.activity,
        "connection": "online" if online else "offline",
        "current_task": current_task,
        "hostname": worker.hostname,
        "id": worker.id,
        "ip_address": worker.ip_address,
        "log": worker.log,
        "port": worker.port,
        "status": worker.status,
        "system": worker.system,
        "time_cost": worker.time_cost,
        "slots": worker.slots,
        "tags": worker.tags,
        "agent_url": worker.agent_url,
    }


def worker_detail(worker: Worker) -> dict[str, Any]:
    """``GET /workers/{id}``: the seed's fields."""
    return {
        "id": worker.id,
        "hostname": worker.hostname,
        "mac_address": worker.mac_address,
        "system": worker.system,
        "update_frequent": worker.update_frequent,
        "update_less_frequent": worker.update_less_frequent,
    }


def task_document(task: Any, items: list[WorkItem] | None = None) -> dict[str, Any]:
    """The seed's task fields, with herder's additions (and its work items when given).

    ``task`` is anything with the task's attributes: an ORM object, or a row.
    """
    doc: dict[str, Any] = {
        "id": task.id,
        "worker_id": task.worker_id,
        "priority": task.priority,
        "frame_start": task.frame_start,
        "frame_end": task.frame_end,
        "frame_current": task.frame_current,
        "status": task.status,
        "format": task.format,
        "task_id": task.task_id,
        "owner": getattr(task, "owner", None),
        "type": task.type,
        "parser": task.parser,
        "settings": task.settings,
        "tags": task.tags,
        "error": task.error,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
    }
    if items is not None:
        doc["work_items"] = [item_document(i) for i in items]
    return doc


def build_app(runtime: ManagerRuntime) -> FastAPI:
    app = FastAPI(
        title="herder manager",
        docs_url=None,  # served from local files: herder.ui.apidocs
        redoc_url=None,
        version=__version__,
        description="Workers, tasks, compilers and parsers (the render-farm Manager API).",
        lifespan=runtime.lifespan,
    )
    _install_error_handlers(app)
    app.add_middleware(RequestId)
    from herder.manager import index

    index.install(app, DOCS)
    _worker_routes(app, runtime)
    _task_routes(app, runtime)
    _requeue_route(app, runtime)
    _report_routes(app, runtime)
    _log_routes(app, runtime)
    runtime.rpc.mount(app, "/rpc")
    DOCS.install(app)
    ui.install_api_pages(app, "herder manager")

    _auth_routes(app, runtime)
    from herder.manager.keyroutes import key_routes
    from herder.manager.renewal import renewal_route

    key_routes(app, runtime, DOCS)
    renewal_route(app, runtime, DOCS)
    from herder.manager.inventory import inventory_route

    inventory_route(app, runtime, DOCS)
    _service_routes(app, runtime)
    from herder.manager import proxy

    proxy.install(app, runtime, DOCS)
    schedule_routes.install(app, runtime, DOCS)  # /schedules (#18)

    @app.get(
        "/healthz",
        openapi_extra=DOCS.operation(Health, public=True),
        summary="Liveness: 200 while the manager serves",
    )
    async def healthz() -> Response:
        return JSONResponse({"ok": True})

    return app


@asynccontextmanager
async def _transaction(runtime: ManagerRuntime) -> AsyncIterator[AsyncSession]:
    async with runtime.sessions() as db, db.begin():
        yield db


def _query_int(request: Request, name: str, low: int, high: int | None) -> int | None:
    """An integer query parameter within bounds, or None when absent (422 otherwise)."""
    text = request.query_params.get(name)
    if text is None:
        return None
    high = MAX_ID if high is None else high
    bounds = f"from {low:,} to {high:,}"
    if not _is_number(text) or not low <= int(text) <= high:
        raise ApiError(422, "invalid", f"{name} must be a whole number {bounds}, not {text!r}", name)
    return int(text)


def _query_text(request: Request, name: str, max_length: int) -> str | None:
    """A text query parameter of 1 to ``max_length`` characters, or None when absent (422 otherwise)."""
    text = request.query_params.get(name)
    if text is not None and not 0 < len(text) <= max_length:
        raise ApiError(422, "invalid", f"{name} must be 1 to {max_length} characters", name)
    return text


def _url(request: Request, path: str) -> str:
    """The absolute URL of ``path`` on this manager, as the client addressed it (its ``Host``)."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}{path}"


def _query_status(request: Request) -> str | None:
    """``?status=``: a task status, or None when absent (422 otherwise: a typo would list nothing)."""
    status = request.query_params.get("status")
    if status is not None and status not in TASK_STATUSES:
        choices = ", ".join(TASK_STATUSES)
        raise ApiError(422, "invalid", f"status must be one of {choices}, not {status!r}", "status")
    return status


# GET /tasks's and GET /tasks/counts's filters: the counts say what the filtered list holds.
_OWNER_AND_TAG = (
    query_param(
        "owner",
        "Only the tasks this user submitted (a user sees only their own anyway).",
        {"type": "string", "minLength": 1, "maxLength": 255},
    ),
    query_param("tag", "Only the tasks with this tag.", {"type": "string", "minLength": 1, "maxLength": 64}),
)


def _owner_and_tag(request: Request) -> tuple[str | None, str | None]:
    """``?owner=`` and ``?tag=``, each None when absent (422 naming it when empty or too long)."""
    return _query_text(request, "owner", 255), _query_text(request, "tag", 64)


def _principal(connection: Request | WebSocket) -> tuple[str | None, str | None]:
    return principal_of(connection.scope)


def _viewer(connection: Request | WebSocket) -> str | None:
    return viewer_of(connection.scope)


def _require_admin(request: Request) -> None:
    """Workers' routes (registering, reporting, switching) are for admins' keys only."""
    name, role = _principal(request)
    if role not in (None, "admin"):
        raise ApiError(
            403, "forbidden", f"{name!r} is not an admin: workers need an admin's key", "Authorization"
        )


def _check_priority(request: Request, priority: int | None, cap: int) -> None:
    """A user's priority is capped (``max_user_priority``); an admin's is not.

    Without keys there are no users: whoever reaches the manager is an admin (as for
    everything else), and no cap applies.
    """
    name, role = _principal(request)
    if priority is not None and role not in (None, "admin") and priority > cap:
        raise ApiError(
            403,
            "forbidden",
            f"priority {priority} is above {cap}, the highest a user ({name!r}) may give "
            "(the manager's max_user_priority); an admin may give more",
            "priority",
        )


def _is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes '²', which ``int`` refuses (a 500)."""
    return text.isascii() and text.isdigit()


def _path_id(request: Request, name: str = "id") -> int:
    text = request.path_params[name]
    if not _is_number(text) or int(text) > MAX_ID:
        raise ApiError(
            422, "invalid", f"{name} must be a whole number from 0 to {MAX_ID:,}, not {text!r}", name
        )
    return int(text)


def _worker_routes(app: FastAPI, runtime: ManagerRuntime) -> None:
    cfg = runtime.config

    @app.post(
        "/workers",
        status_code=201,
        openapi_extra=DOCS.operation(
            "WorkerList",
            *BODY_ERRORS,
            (403, "Not an admin's key: workers register with an admin's key."),
            status=201,
            body=WorkerRegistration,
            headers={"Location": "The new worker's URL (GET /workers/{id})."},
            more={200: {"description": "Registered again: updated.", "content": DOCS.json_of("WorkerList")}},
        ),
        summary="Register a worker (again: update it)",
    )
    async def register(request: Request) -> Response:
        _require_admin(request)
        req = await read_json(request, WorkerRegistration)
        fields = req.model_dump(exclude_unset=True)  # registering again changes only what is given
        if fields.get("mac_address") is not None:
            fields["mac_address"] = str(fields["mac_address"])
        if fields.get("ip_address") is None and request.client is not None:
            fields["ip_address"] = request.client.host
        async with _transaction(runtime) as db:
            worker, created = await queries.register_worker(db, fields)
            current = await queries.current_items(db, worker.id)
            doc = worker_summary(worker, current[0].task_id if current else None, cfg.offline_after_s)
        if not created:
            return JSONResponse({worker.hostname: doc})
        location = {"Location": _url(request, f"/workers/{worker.id}")}
        return JSONResponse({worker.hostname: doc}, status_code=201, headers=location)

    @app.get(
        "/workers", openapi_extra=DOCS.operation("WorkerList"), summary="Every worker, keyed by hostname"
    )
    async def list_workers() -> Response:
        async with _transaction(runtime) as db:
            answer = {}
            for worker in await queries.list_workers(db):
                current = await queries.current_items(db, worker.id)
                task = current[0].task_id if current else None
                answer[worker.hostname] = worker_summary(worker, task, cfg.offline_after_s)
        return JSONResponse(answer)

    @app.get(
        "/workers/{id}",
        openapi_extra=DOCS.operation("WorkerDetail", _WORKER_404, 422, params=[_ID]),
        summary="One worker's figures",
    )
    async def get_worker(request: Request) -> Response:
        async with _transaction(runtime) as db:
            worker = await queries.get_worker(db, _path_id(request))
            return JSONResponse(worker_detail(worker))

    @app.patch(
        "/workers/{id}",
        openapi_extra=DOCS.operation(
            "WorkerAssignment",
            *BODY_ERRORS,
            _WORKER_404,
            (403, "Not an admin's key: workers report with an admin's key."),
            body=WorkerUpdate,
            params=[_ID],
        ),
        summary="A worker's status; answers the task it now runs (the pull path)",
    )
    async def update_worker(request: Request) -> Response:
        _require_admin(request)
        worker_id = _path_id(request)
        req = await read_json(request, WorkerUpdate)
        figures = req.model_dump(exclude_none=True, include={"update_frequent", "update_less_frequent"})
        async with _transaction(runtime) as db:
            worker = await queries.get_worker(db, worker_id)
            if req.status in ("enabled", "disabled"):  # an operator's switch says nothing of its health
                worker.status = req.status
            elif req.status is not None:
                worker.activity = req.status
        if req.status not in ("enabled", "disabled"):
            await runtime.writes.heartbeat(Beat(worker_id, figures))
        claimed = await runtime.writes.claim([worker_id], most=1) if req.status == "available" else []
        async with _transaction(runtime) as db:
            current = await queries.current_items(db, worker_id)
        item: Any = claimed[0] if claimed else (current[0] if current else None)
        return JSONResponse(
            {"task_id": item.task_id if item else None, "work_item": item_document(item) if item else None}
        )


async def _cancel(runtime: ManagerRuntime, db: AsyncSession, task: Task) -> list[int]:
    """Cancel a task: its running work is stopped, and the output kept of its items (all
    ended now) is stored in the cancel's transaction; the items' ids."""
    await runtime.stop_running(db, await queries.cancel_task(db, task))
    ended = [item.id for item in await queries.items_of(db, task.id)]
    await item_logs.keep(db, runtime.output.final_logs(ended))
    return ended


def _let_go(runtime: ManagerRuntime, task_id: int, ended: list[int] | None) -> None:
    """After a cancel's commit (``ended``: its items; None: no cancel), their lines leave
    the memory and the task's live readers are told it ended."""
    if ended is None:
        return
    for item_id in ended:
        runtime.output.item_ended(item_id)
    runtime.output.task_ended(task_id)


def _task_routes(app: FastAPI, runtime: ManagerRuntime) -> None:
    @app.post(
        "/tasks",
        status_code=202,
        openapi_extra=DOCS.operation(
            "TaskDocument",
            *BODY_ERRORS,
            (403, "A user's priority above max_user_priority."),
            status=202,
            body=TaskSubmission,
            headers={"Location": "The task's URL (GET /tasks/{id})."},
        ),
        summary="Submit a task: compiled into work at once",
    )
    async def submit(request: Request) -> Response:
        req = await read_json(request, TaskSubmission)
        _check_priority(request, req.priority, runtime.config.max_user_priority)
        new = await runtime.compile(req)
        new.task["owner"] = _principal(request)[0]
        task_id = await runtime.writes.submit_task(new)  # its round hands it out, if a slot is free
        doc = task_document(
            SimpleNamespace(**new.task, id=task_id, worker_id=None, frame_current=None, error=None)
        )
        return JSONResponse(doc, status_code=202, headers={"Location": _url(request, f"/tasks/{task_id}")})

    @app.get(
        "/tasks",
        openapi_extra=DOCS.operation(
            "TaskPage",
            422,
            params=[
                query_param("status", "Only the tasks with this status.", {"enum": list(TASK_STATUSES)}),
                query_param(
                    "limit",
                    f"At most this many tasks (default {DEFAULT_TASKS_PAGE:,}).",
                    {"type": "integer", "minimum": 1, "maximum": MAX_TASKS_PAGE},
                ),
                query_param(
                    "before",
                    "Only tasks with a smaller id: the 'next' of the page before.",
                    {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                ),
                *_OWNER_AND_TAG,
            ],
        ),
        summary="Tasks, newest first (?status=, ?owner=, ?tag=, ?limit=, ?before= to page)",
    )
    async def list_tasks(request: Request) -> Response:
        status = _query_status(request)
        limit = _query_int(request, "limit", 1, MAX_TASKS_PAGE) or DEFAULT_TASKS_PAGE
        before = _query_int(request, "before", 1, None)
        of_owner, tag = _owner_and_tag(request)
        async with _transaction(runtime) as db:
            tasks = await queries.list_tasks(
                db, status, limit, before, _viewer(request), of_owner=of_owner, tag=tag
            )
            page = [task_document(t) for t in tasks]
        more = len(page) == limit
        return JSONResponse({"tasks": page, "next": page[-1]["id"] if page and more else None})

    @app.get(
        "/tasks/counts",
        openapi_extra=DOCS.operation("TaskCounts", 422, params=list(_OWNER_AND_TAG)),
        summary="How many tasks have each status, and in all (?owner=, ?tag= as GET /tasks)",
    )
    async def count_tasks(request: Request) -> Response:
        of_owner, tag = _owner_and_tag(request)
        async with _transaction(runtime) as db:
            counts = await queries.count_tasks(db, _viewer(request), of_owner=of_owner, tag=tag)
        answer = {status: counts.get(status, 0) for status in TASK_STATUSES}
        return JSONResponse({**answer, "total": sum(counts.values())})

    @app.get(
        "/tasks/{id:task_id}",
        openapi_extra=DOCS.operation("TaskDetail", _TASK_404, 422, params=[_ID]),
        summary="A task, with its work items",
    )
    async def get_task(request: Request) -> Response:
        async with _transaction(runtime) as db:
            task = await queries.get_task(db, _path_id(request), owner=_viewer(request))
            doc = task_document(task, list(await queries.items_of(db, task.id)))
            doc["waiting"] = await queries.waiting_reason(db, task, runtime.config.offline_after_s)
            return JSONResponse(doc)

    @app.patch(
        "/tasks/{id:task_id}",
        status_code=204,
        openapi_extra=DOCS.operation(
            None,
            *BODY_ERRORS,
            _TASK_404,
            (403, "A user's priority above max_user_priority."),
            (409, "The task has ended: it cannot change."),
            status=204,
            body=TaskUpdate,
            params=[_ID],
        ),
        summary="Priority, pause, resume or cancel",
    )
    async def update_task(request: Request) -> Response:
        task_id = _path_id(request)
        req = await read_json(request, TaskUpdate)
        _check_priority(request, req.priority, runtime.config.max_user_priority)
        ended: list[int] | None = None  # the items a cancel ended
        async with _transaction(runtime) as db:
            task = await queries.get_task(db, task_id, owner=_viewer(request))
            if task.status in TERMINAL:
                raise Conflict(f"task {task_id} is {task.status}: it cannot change", "status")
            if req.priority is not None:
                await queries.set_priority(db, task, req.priority)
            wanted = TaskStatus(req.status) if req.status is not None else None
            if wanted == TaskStatus.PAUSED:
                await queries.set_paused(db, task, True)
            elif wanted == TaskStatus.QUEUED:
                await queries.set_paused(db, task, False)
            elif wanted == TaskStatus.CANCELED:
                ended = await _cancel(runtime, db, task)
        _let_go(runtime, task_id, ended)
        return Response(status_code=204)

    @app.delete(
        "/tasks/{id:task_id}",
        status_code=202,
        openapi_extra=DOCS.operation("TaskDocument", _TASK_404, 422, status=202, params=[_ID]),
        summary="Delete a task (running work is stopped)",
    )
    async def delete_task(request: Request) -> Response:
        async with _transaction(runtime) as db:
            task = await queries.get_task(db, _path_id(request), owner=_viewer(request))
            doc = task_document(task)
            await runtime.stop_running(db, await queries.delete_task(db, task))
            await runtime.events.announce_deleted(db, task.id, task.owner)  # other managers' tabs
            runtime.output.task_deleted(task.id)
        runtime.events.deleted(task.id, task.owner)  # no row is left for the feed to read
        doc["status"] = "deleted"
        return JSONResponse(doc, status_code=202)


Kept = list[tuple[WorkItem, int, list[tuple[int, str, str]]]]
"""A task's items, each with the seq of its first kept line (``output.LiveLine``) and its
kept lines: (attempt, stream, text), oldest first."""


async def _kept_lines(
    runtime: ManagerRuntime, items: list[WorkItem], subscribe: Callable[[], None] | None = None
) -> Kept:
    """Each item's kept lines: an ended item's from the database, a live one's from memory.

    The database is read first, then the memory at once after ``subscribe`` (a stream's
    live reader: a line that comes later is on its queue, none is there twice). Items
    found in neither (no output yet, or ended in between) are read again from the
    database: an item's lines move there before they leave the memory.
    """
    ids = [item.id for item in items]
    async with _transaction(runtime) as db:
        stored = await item_logs.lines_of(db, ids)
    if subscribe is not None:
        subscribe()
    memory = {i: runtime.output.kept(i) for i in ids if i not in stored}
    late = [i for i, (_, lines) in memory.items() if not lines]
    if late:
        async with _transaction(runtime) as db:
            stored.update(await item_logs.lines_of(db, late))
    return [(item, *stored.get(item.id, memory.get(item.id, (0, [])))) for item in items]


def _elsewhere(items: list[WorkItem]) -> list[tuple[int, bool]]:
    """The live items whose lines may be held by another manager, each with whether a
    reader waits for them (``outputshare.follow``)."""
    return [(i.id, waited_for(i.status, i.attempt)) for i in items if i.status not in TERMINAL]


class _LogFrames:
    """A log stream's frames: each item's lines once and in order, a gap said
    (``outputshare.LineOrder``), wherever they came from."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._order = LineOrder()

    async def send(self, kept: Iterable[tuple[int, int, list[tuple[int, str, str]]]]) -> None:
        """Lines ``(item, seq of the first, [(attempt, stream, text), ...])``."""
        for item_id, first, lines in kept:
            for n, (attempt, stream, line) in enumerate(lines):
                for i, a, s, t, _ in self._order.accept((item_id, attempt, stream, line, first + n)):
                    await self._ws.send_json({"item": i, "attempt": a, "stream": s, "line": t})


async def _task_for_stream(
    runtime: ManagerRuntime, ws: WebSocket, text: str
) -> tuple[Task | None, list[WorkItem]]:
    """The task a log stream names and its items; None for another user's task, which is
    as absent as one that does not exist."""
    async with _transaction(runtime) as db:
        task = await db.get(Task, int(text)) if text.isdigit() else None
        if task is None or _viewer(ws) not in (None, task.owner):
            return None, []
        return task, list(await queries.items_of(db, task.id))


async def _stream_log(runtime: ManagerRuntime, ws: WebSocket) -> None:
    """``WS /tasks/{id}/log``: the kept lines, then live ones until the task ends."""
    text = ws.path_params["id"]
    task, items = await _task_for_stream(runtime, ws, text)
    if task is None:
        await ws.send_denial_response(answer_of(NotFound(f"no task with id {text}")))
        return
    await ws.accept()
    readers: list[Reader] = []
    follows: list[Follow | None] = []  # the lines held by other managers (PostgreSQL)
    task_id, live = task.id, task.status not in TERMINAL

    def subscribe() -> None:
        reader = runtime.output.subscribe(task_id)
        readers.append(reader)
        if live:
            follows.append(runtime.output_share.follow(task_id, _elsewhere(items), partial(offer, reader)))

    send = _LogFrames(ws).send
    try:
        kept = await _kept_lines(runtime, items, subscribe)
        await send((item.id, first, lines) for item, first, lines in kept)
        while task.status not in TERMINAL:
            try:
                entry = await asyncio.wait_for(readers[0].get(), LOG_STATUS_CHECK_S)
            except TimeoutError:  # it may have ended elsewhere (a lease, another manager)
                async with _transaction(runtime) as db:
                    found = await db.get(Task, task_id)
                if found is None:  # deleted elsewhere
                    break
                task = found
                continue
            if entry is None:
                break
            item_id, attempt, stream, line, seq = entry
            await send([(item_id, seq, [(attempt, stream, line)])])
        # What the items live at the start stored after the last line sent: lines another
        # manager held that had not come yet (the others were sent whole from the database).
        async with _transaction(runtime) as db:
            stored = await item_logs.lines_of(db, [i.id for i in items if i.status not in TERMINAL])
        await send((item_id, first, lines) for item_id, (first, lines) in sorted(stored.items()))
        await ws.close(1000, "the task has ended")
    except (WebSocketDisconnect, OSError):
        pass
    finally:
        for reader in readers:
            runtime.output.unsubscribe(task_id, reader)
        for follow in follows:
            runtime.output_share.unfollow(follow)


def _log_routes(app: FastAPI, runtime: ManagerRuntime) -> None:
    @app.websocket("/tasks/{id}/log")
    async def task_log_stream(ws: WebSocket) -> None:
        """Each output line as a JSON text frame ``{"item", "attempt", "stream", "line"}``:
        the lines kept first, then live ones; closed (1000) when the task has ended."""
        await _stream_log(runtime, ws)

    @app.get(
        "/tasks/{id:task_id}/log",
        response_class=PlainTextResponse,  # for the document: the answer is built below
        openapi_extra=DOCS.text(
            "'[<label> #<attempt>] <line>' per line; stderr lines say 'stderr: '.",
            _TASK_404,
            422,
            params=[_ID],
        ),
        summary="The task's output, as text (the last lines of each piece)",
    )
    async def task_log(request: Request) -> Response:
        async with _transaction(runtime) as db:
            task = await queries.get_task(db, _path_id(request), owner=_viewer(request))
            items = list(await queries.items_of(db, task.id))
        kept = await _kept_lines(runtime, items)
        waiting = _elsewhere([item for item, _, lines in kept if not lines])
        if waiting:  # lines held by other managers (PostgreSQL): asked for, ~1 s at most
            found = await runtime.output_share.gather(task.id, waiting)
            kept = [(item, first, lines or found.get(item.id, [])) for item, first, lines in kept]
        lines = []
        for item, _, item_lines in kept:
            for attempt, stream, text in item_lines:
                prefix = "" if stream == "stdout" else f"{stream}: "
                lines.append(f"[{item.label or item.index} #{attempt}] {prefix}{text}")
        return Response("\n".join(lines) + ("\n" if lines else ""), media_type="text/plain; charset=utf-8")


def _report_routes(app: FastAPI, runtime: ManagerRuntime) -> None:
    async def item_now(item_id: int) -> Response:
        async with _transaction(runtime) as db:
            item = await db.get(WorkItem, item_id)
            if item is None:
                raise NotFound(f"no work item {item_id}")
            return JSONResponse(item_document(item))

    @app.post(
        "/work-items/{id}/started",
        openapi_extra=DOCS.operation(
            "WorkItemDocument", *BODY_ERRORS, *_ITEM_ERRORS, body=WorkReport, params=[_ID]
        ),
        summary="A worker started its attempt",
    )
    async def started(request: Request) -> Response:
        _require_admin(request)
        req = await read_json(request, WorkReport)
        item_id = _path_id(request)
        await runtime.writes.started(Report(item_id, req.worker_id, req.attempt))
        return await item_now(item_id)

    @app.post(
        "/work-items/{id}/progress",
        openapi_extra=DOCS.operation(
            "WorkItemDocument", *BODY_ERRORS, *_ITEM_ERRORS, body=ProgressReport, params=[_ID]
        ),
        summary="Progress of an attempt (a frame, a percentage)",
    )
    async def progress(request: Request) -> Response:
        _require_admin(request)
        req = await read_json(request, ProgressReport)
        item_id = _path_id(request)
        report = Report(item_id, req.worker_id, req.attempt)
        await runtime.writes.progress(report, req.frame, req.percent)
        return await item_now(item_id)

    @app.post(
        "/work-items/{id}/finished",
        openapi_extra=DOCS.operation(
            "WorkItemDocument", *BODY_ERRORS, *_ITEM_ERRORS, body=FinishedReport, params=[_ID]
        ),
        summary="An attempt ended with its exit code",
    )
    async def finished(request: Request) -> Response:
        _require_admin(request)
        req = await read_json(request, FinishedReport)
        item_id = _path_id(request)
        report = Finished(item_id, req.worker_id, req.attempt, req.exit_code, req.error)
        await runtime.writes.finished(report)
        return await item_now(item_id)


def _requeue_route(app: FastAPI, runtime: ManagerRuntime) -> None:
    @app.post(
        "/tasks/{id:task_id}/requeue",
        status_code=202,
        openapi_extra=DOCS.operation(
            "TaskDocument",
            _TASK_404,
            (403, "A user's priority above max_user_priority (the task's own)."),
            (409, "The task has not ended: pause, resume or cancel it instead."),
            422,
            status=202,
            params=[_ID],
            headers={"Location": "The new task's URL (GET /tasks/{id})."},
        ),
        summary="Run an ended task again: a new task with its settings, submitted by the caller",
    )
    async def requeue(request: Request) -> Response:
        """A new task, not the old one reopened: an ended task's attempts and output stay
        as they were (its work items are terminal, and no event leaves a terminal status)."""
        async with _transaction(runtime) as db:
            old = await queries.get_task(db, _path_id(request), owner=_viewer(request))
            if old.status not in TERMINAL:
                raise Conflict(f"task {old.id} is {old.status}: only an ended task is requeued", "id")
            again = TaskSubmission(
                type=old.type,
                settings=old.settings,
                parser=old.parser,
                priority=old.priority,
                tags=old.tags,
                task_id=old.task_id,
                max_attempts=old.max_attempts,
            )
        _check_priority(request, again.priority, runtime.config.max_user_priority)
        new = await runtime.compile(again)
        new.task["owner"] = _principal(request)[0]
        task_id = await runtime.writes.submit_task(new)
        doc = task_document(
            SimpleNamespace(**new.task, id=task_id, worker_id=None, frame_current=None, error=None)
        )
        return JSONResponse(doc, status_code=202, headers={"Location": _url(request, f"/tasks/{task_id}")})


def _auth_routes(app: FastAPI, runtime: ManagerRuntime) -> None:
    @app.get(
        "/auth/jwks.json",
        openapi_extra=DOCS.operation(
            "Jwks", (404, "Auth is off: the manager has no signing key."), public=True
        ),
        summary="The public key tokens are signed with (JWKS); 404 with auth off",
    )
    async def jwks() -> Response:
        if runtime.authority is None:
            raise ApiError(404, "not_found", "auth is off: this manager has no signing key", "path")
        return JSONResponse(runtime.authority.jwks())

    @app.post(
        "/auth/token",
        openapi_extra=DOCS.operation(
            "AccessToken",
            (401, "No key as 'Authorization: Bearer <key>', or not a valid one."),
            (404, "Auth is off: the manager issues no tokens."),
        ),
        summary="An access token for the key given as bearer",
    )
    async def token(request: Request) -> Response:
        from herder.auth import TokenError
        from herder.frontdoor import note_failed_authentication

        if runtime.authority is None:
            raise ApiError(404, "not_found", "auth is off: this manager issues no tokens", "path")
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            note_failed_authentication(request.scope, credential=None, why="no_credentials")
            raise ApiError(
                401, "unauthorized", "send your key as 'Authorization: Bearer <key>'", "Authorization"
            )
        try:
            access, expires_at = await runtime.authority.buy(
                key.strip(), runtime.config.token_ttl_s, runtime.transaction
            )
        except TokenError as exc:
            note_failed_authentication(request.scope, credential=key.strip(), why=exc.reason, detail=str(exc))
            raise ApiError(401, exc.reason, str(exc), "Authorization") from None
        return JSONResponse({"token": access, "expires_at": expires_at})


def _service_query(text: str | None) -> Any:
    from herder.registry import BadName, Query

    if text is None:
        raise ApiError(
            422, "invalid", "query is required: a prefix of the key, like /alice/prod/math", "query"
        )
    try:
        return Query.parse(text)
    except BadName as exc:
        raise ApiError(400, "invalid", str(exc), f"query.{exc.field}") from None


def _service_routes(app: FastAPI, runtime: ManagerRuntime) -> None:
    from herder.manager.services import DEFAULT_FIND_LIMIT, MAX_FIND_LIMIT, registration_document

    services = runtime.services

    @app.get(
        "/services",
        openapi_extra=DOCS.operation(
            "ServiceList",
            (400, "The query is not a valid prefix of a key; 'field' names the part."),
            422,
            params=[
                query_param(
                    "query",
                    "A prefix of the services' keys, like /alice/prod/math (docs/protocol.md: names).",
                    {"type": "string", "pattern": "^/"},
                    required=True,
                ),
                query_param(
                    "limit",
                    f"At most this many services (default {DEFAULT_FIND_LIMIT:,}).",
                    {"type": "integer", "minimum": 1, "maximum": MAX_FIND_LIMIT},
                ),
            ],
        ),
        summary="Registered services under a prefix of their key (?query=)",
    )
    async def find_services(request: Request) -> Response:
        query = _service_query(request.query_params.get("query"))
        limit = _query_int(request, "limit", 1, MAX_FIND_LIMIT) or DEFAULT_FIND_LIMIT
        found = services.query(query, limit)
        return JSONResponse({"services": [registration_document(r) for r in found]})

    @app.websocket("/services/watch")
    async def watch_services(ws: WebSocket) -> None:
        """``{"event": "registered"|"deregistered", "service": {...}}`` frames for a query."""
        try:
            query = _service_query(ws.query_params.get("query"))
        except ApiError as exc:
            await ws.send_denial_response(error_response(exc.status, exc.code, str(exc), exc.field))
            return
        await ws.accept()
        watch, queue = services.watch(query)
        try:
            while True:
                event = await queue.get()
                await ws.send_json(
                    {"event": event.kind, "service": registration_document(event.registration)}
                )
        except (WebSocketDisconnect, OSError):
            pass
        finally:
            watch.close()


def answer_of(exc: ManagerError) -> JSONResponse:
    """The one error document for a manager's error: its status, code, message and field."""
    return error_response(exc.http_status, exc.code, str(exc), exc.field)


class _TaskIdConvertor(Convertor[str]):
    """A task's id in a path: any segment but ``counts``, which is ``GET /tasks/counts``'s.

    With a plain ``{id}``, ``PATCH /tasks/counts`` was a PATCH of a task named "counts" (a
    422) where its document says the path takes GET alone (a 405 with ``Allow: GET``). A
    segment that is not a number stays a task id, refused by ``_path_id`` (422 naming id).
    """

    regex = "(?!counts$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("task_id", _TaskIdConvertor())


def _install_error_handlers(app: FastAPI) -> None:
    """The framework's errors and ``ApiError`` as every herder API answers them, and every
    ``ManagerError`` by its own status and code: the one place they become HTTP."""

    async def manager_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ManagerError)
        return answer_of(exc)

    install_error_handlers(app, {})
    app.add_exception_handler(ManagerError, manager_error)
