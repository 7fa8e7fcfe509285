"""``GET /``: the manager's index, links to what it serves (as the agent's ``/`` does).

A newcomer's first request to a daemon is ``curl http://host:port/``; the agent answers
it with its actions, and the manager answered 404 (#16). The links are absolute, built
from the address the client used (its ``Host``), so they work through a tunnel or a
proxy that keeps the name. The index is behind the same credentials as the rest.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from herder.openapi_docs import ApiDocs

__all__ = ["ManagerIndex", "install"]


class ManagerIndex(BaseModel):
    """``GET /``: where each part of the manager is."""

    model_config = ConfigDict(defer_build=True)

    workers: str = Field(description="GET the workers; POST registers one (the pull path).")
    tasks: str = Field(description="GET a page of tasks; POST submits one.")
    counts: str = Field(description="GET the number of tasks in each status.")
    services: str = Field(
        description="GET every live service of the registry; ?query=/user/env/... narrows it."
    )
    rpc: str = Field(description="The wire protocol over WebSocket: agents' links, the registry, relays.")
    events: str = Field(description="WebSocket: the live feed of workers and tasks.")
    ui: str = Field(description="The dashboard.")
    docs: str = Field(description="The API reference (OpenAPI at /openapi.json).")


def _base(request: Request) -> str:
    """``scheme://host[:port]`` as the client addressed this manager."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def install(app: FastAPI, docs: ApiDocs) -> None:
    """Add ``GET /`` to the manager's ``app``, described in ``docs``."""

    @app.get("/", openapi_extra=docs.operation(ManagerIndex), summary="Index: links to the manager's parts")
    async def index(request: Request) -> Response:
        base = _base(request)
        ws = "ws" + base.removeprefix("http")
        return JSONResponse(
            {
                "workers": f"{base}/workers",
                "tasks": f"{base}/tasks",
                "counts": f"{base}/tasks/counts",
                "services": f"{base}/services?query=/*",
                "rpc": f"{ws}/rpc",
                "events": f"{ws}/events",
                "ui": f"{base}/ui/",
                "docs": f"{base}/docs",
            }
        )
