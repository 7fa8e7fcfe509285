"""``/schedules``: make, list, read, change (pause, resume) and delete schedules.

Owners work as for tasks: with keys on, a schedule belongs to the user whose key made
it; a ``user`` key sees and changes only its own (another's is a 404, as absent as one
that does not exist), an ``admin`` key every one. The runs' tasks are submitted in the
owner's name, so they are the owner's tasks, with a user's priority capped as
``POST /tasks`` caps it. A user may hold at most ``MAX_SCHEDULES_PER_USER`` schedules
(admins are not bounded), and no schedule runs more often than once a second. A
schedule whose owner holds no valid key any more submits nothing (``store.fire``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from herder.apierrors import ApiError, FieldError, read_json
from herder.manager.errors import InvalidTask
from herder.manager.models import MAX_ID, TaskSubmission
from herder.manager.schedules import store
from herder.manager.schedules.models import (
    ScheduleDetail,
    ScheduleDocument,
    ScheduleList,
    ScheduleRequest,
    ScheduleUpdate,
)
from herder.manager.schedules.timing import Timing
from herder.openapi_docs import path_param
from herder.principals import principal_of, viewer_of

if TYPE_CHECKING:
    from herder.manager.server import ManagerRuntime

MAX_SCHEDULES_PER_USER = 100
BODY_ERRORS = (400, 408, 413, 422)
_ID = path_param(
    "id", "A number, as in the documents' 'id'.", {"type": "integer", "minimum": 0, "maximum": MAX_ID}
)
_404 = (404, "No schedule with that id, or another user's.")
_PRIORITY = (
    403,
    "The task's priority is above max_user_priority (a user's key), or the user has "
    f"{MAX_SCHEDULES_PER_USER} schedules already.",
)


def _path_id(request: Request) -> int:
    text = request.path_params["id"]
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_ID:
        raise ApiError(422, "invalid", f"id must be a whole number from 0 to {MAX_ID:,}, not {text!r}", "id")
    return int(text)


async def _check_task(request: Request, runtime: ManagerRuntime, task: TaskSubmission) -> None:
    """Refuse a template ``POST /tasks`` would refuse, naming ``task.<field>``.

    It is compiled now (and again at each run): a compiler's refusal is a 422 here.
    """
    name, role = principal_of(request.scope)
    cap = runtime.config.max_user_priority
    if role not in (None, "admin") and task.priority > cap:
        raise ApiError(
            403,
            "forbidden",
            f"priority {task.priority} is above {cap}, the highest a user ({name!r}) may give "
            "(the manager's max_user_priority); an admin may give more",
            "task.priority",
        )
    try:
        await runtime.compile(task)
    except InvalidTask as exc:
        raise ApiError(422, exc.code, f"task.{exc}", f"task.{exc.field}") from None


def _template(task: TaskSubmission) -> dict[str, Any]:
    return task.model_dump(mode="json", exclude_unset=True)


def install(app: FastAPI, runtime: ManagerRuntime, docs: Any) -> None:
    """The ``/schedules`` routes, documented in ``docs`` (the manager's ``ApiDocs``)."""
    scheduler = runtime.schedules

    @app.post(
        "/schedules",
        status_code=201,
        openapi_extra=docs.operation(
            ScheduleDocument,
            *BODY_ERRORS,
            _PRIORITY,
            status=201,
            body=ScheduleRequest,
            headers={"Location": "The schedule's URL (GET /schedules/{id})."},
        ),
        summary="Make a schedule: a task submitted on a cron expression or an interval",
    )
    async def create(request: Request) -> Response:
        req = await read_json(request, ScheduleRequest)
        await _check_task(request, runtime, req.task)
        owner, role = principal_of(request.scope)
        fields = req.model_dump(exclude={"task"})
        fields["template"] = _template(req.task)
        async with runtime.transaction() as db:
            if role not in (None, "admin") and await store.count_of(db, owner) >= MAX_SCHEDULES_PER_USER:
                raise ApiError(
                    403,
                    "forbidden",
                    f"{owner!r} has {MAX_SCHEDULES_PER_USER} schedules, the most a user may hold: "
                    "delete one first",
                    "owner",
                )
            schedule = await store.create(db, {**fields, "owner": owner}, scheduler.clock.time())
            doc = store.schedule_document(schedule)
        scheduler.wake()
        host = request.headers.get("host", "")
        location = f"{request.url.scheme}://{host}/schedules/{doc['id']}"
        return JSONResponse(doc, status_code=201, headers={"Location": location})

    @app.get(
        "/schedules",
        openapi_extra=docs.operation(ScheduleList),
        summary="Every schedule (a user's key: its own), oldest first",
    )
    async def list_schedules(request: Request) -> Response:
        async with runtime.transaction() as db:
            found = await store.listing(db, viewer_of(request.scope))
            return JSONResponse({"schedules": [store.schedule_document(s) for s in found]})

    @app.get(
        "/schedules/{id}",
        openapi_extra=docs.operation(ScheduleDetail, _404, 422, params=[_ID]),
        summary="A schedule, with its last runs and their tasks",
    )
    async def get_schedule(request: Request) -> Response:
        async with runtime.transaction() as db:
            schedule = await store.get(db, _path_id(request), viewer_of(request.scope))
            doc = store.schedule_document(schedule)
            doc["recent_runs"] = await store.recent_runs(db, schedule.id)
        return JSONResponse(doc)

    @app.patch(
        "/schedules/{id}",
        openapi_extra=docs.operation(
            ScheduleDocument, *BODY_ERRORS, _404, _PRIORITY, body=ScheduleUpdate, params=[_ID]
        ),
        summary="Change a schedule; enabled: false pauses it, true resumes it",
    )
    async def update_schedule(request: Request) -> Response:
        schedule_id = _path_id(request)
        req = await read_json(request, ScheduleUpdate)
        fields = req.model_dump(exclude_none=True, exclude={"task"})
        if req.task is not None:
            await _check_task(request, runtime, req.task)
            fields["task"] = _template(req.task)
        async with runtime.transaction() as db:
            schedule = await store.get(db, schedule_id, viewer_of(request.scope), lock=True)
            timing = Timing(
                fields.get("cron", None if "interval_s" in fields else schedule.cron),
                fields.get("interval_s", None if "cron" in fields else schedule.interval_s),
                fields.get("timezone", schedule.timezone),
            )
            try:
                timing.check()
            except FieldError as exc:
                raise ApiError(422, "invalid", str(exc), exc.field) from None
            await store.update_schedule(db, schedule, fields, scheduler.clock.time())
            doc = store.schedule_document(schedule)
        scheduler.wake()
        return JSONResponse(doc)

    @app.delete(
        "/schedules/{id}",
        openapi_extra=docs.operation(ScheduleDocument, _404, 422, params=[_ID]),
        summary="Delete a schedule (the tasks it submitted stay)",
    )
    async def delete_schedule(request: Request) -> Response:
        async with runtime.transaction() as db:
            schedule = await store.get(db, _path_id(request), viewer_of(request.scope), lock=True)
            doc = store.schedule_document(schedule)
            await store.delete_schedule(db, schedule)
        return JSONResponse(doc)
