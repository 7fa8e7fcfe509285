"""``POST /reload-config``: apply the agent's config file again (``herder reload``).

In the seed's URL style, with no body or ``{}``. Only an admin may ask (without keys,
whoever holds the shared secret, or anyone on a loopback agent that runs open): the
file decides what runs for everyone. The answer says what the reload did
(``herder.agent.reload``); a file that does not read or validate changes nothing and
is a 422 listing every problem.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from herder.agent.api.routes import _docs
from herder.agent.models import DeleteRequest
from herder.agent.reload import ReloadRefused
from herder.apierrors import ApiError, read_json
from herder.principals import viewer_of

if TYPE_CHECKING:
    from herder.agent.server import AgentRuntime


class ReloadAnswer(BaseModel):
    """What a reload did. Processes by slug, pools as ``pool:<name>``."""

    model_config = ConfigDict(defer_build=True)

    started: list[str] = Field(description="Declared and not running: started.")
    stopped: list[str] = Field(description="Declared no more: stopped and deleted.")
    changed: list[str] = Field(description="Declared otherwise than they ran: stopped, started as declared.")
    unchanged: list[str] = Field(description="Running as declared: not touched.")
    restart_needed: list[str] = Field(
        description="Settings the file changes that take an agent restart (not applied)."
    )


def reload_routes(runtime: AgentRuntime) -> APIRouter:
    """``POST /reload-config``."""
    router = APIRouter()

    @router.post(
        "/reload-config",
        openapi_extra=_docs(
            ReloadAnswer,
            400,
            408,
            413,
            (422, "The config file does not read or validate: nothing changed; 'message' lists why."),
            503,
            (403, "Foreign Host or Origin; or the asker is not an admin."),
            body=DeleteRequest,
            body_required=False,
        ),
        summary="Apply the config file again: start, stop and change declared processes and pools "
        "(herder reload, SIGHUP)",
    )
    async def reload_config(request: Request) -> Response:
        if viewer_of(request.scope) is not None:
            raise ApiError(403, "forbidden", "only an admin may reload the agent's config", None)
        if (await request.body()).strip():
            await read_json(request, DeleteRequest)  # {} or nothing: a typo is not ignored
        if runtime.stopping:
            raise ApiError(503, "stopping", "the agent is shutting down")
        try:
            report = await asyncio.shield(runtime.reloader.reload())
        except ReloadRefused as exc:
            raise ApiError(422, "invalid_config", "; ".join(exc.problems), "config") from None
        return JSONResponse(report.as_dict())

    return router
