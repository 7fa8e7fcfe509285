"""``GET /workers/{id}/inventory``: what a linked agent runs, asked over its link (#15).

The dashboard's worker view shows an agent's processes, pools and sessions inside the
manager's page: the manager asks the agent (``inventory``, docs/protocol.md §19) over the
link the agent keeps to it, so the user signs in once, to the manager. The answer is
validated against the contract (``fleet.Inventory``) before it is passed on, as every
answer of the link is: an agent that answers something else is a 502, not a page that
shows whatever it sent.

Admins only when auth is on: an agent's processes (their command lines, the sessions'
products) are the operator's business, as the workers' routes are. Only this manager can
ask: the worker must be linked *here* (with several managers sharing a database, an agent
is linked to one of them); otherwise 409, saying so. The call is bounded in time
(``INVENTORY_TIMEOUT_S``, 504 past it) and in size (the contract's bounds).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field

from herder.apierrors import ApiError
from herder.fleet import BadAnswer, Inventory, RefusalCode, read_answer, refusal_of
from herder.manager.models import MAX_ID
from herder.manager.store import queries
from herder.openapi_docs import path_param
from herder.rpc import CallTimeout, ConnectionLost, RemoteError, RpcError

if TYPE_CHECKING:
    from herder.manager.server import ManagerRuntime
    from herder.openapi_docs import ApiDocs

log = logging.getLogger(__name__)

PATH = "/workers/{id}/inventory"
# How long the agent has to answer. It makes the documents on its event loop, at once:
# a second is plenty even for a thousand processes; past this it is hung or swamped.
INVENTORY_TIMEOUT_S = 5.0

_ID = path_param(
    "id", "The worker's id, as in GET /workers.", {"type": "integer", "minimum": 0, "maximum": MAX_ID}
)


class WorkerInventory(Inventory):
    """``GET /workers/{id}/inventory``: the worker, and what its agent runs now."""

    model_config = ConfigDict(defer_build=True)

    worker_id: int
    hostname: str
    agent_url: str | None = Field(None, description="The agent's own page and API (its actions).")


def inventory_route(app: FastAPI, runtime: ManagerRuntime, docs: ApiDocs) -> None:
    """Add ``GET /workers/{id}/inventory`` to the manager's app."""
    from herder.manager.api import _path_id, _require_admin

    @app.get(
        PATH,
        openapi_extra=docs.operation(
            WorkerInventory,
            (403, "Not an admin's key: an agent's processes are an admin's to see."),
            (404, "No worker with that id."),
            (409, "The worker is not linked to this manager: offline, a pull worker, or another manager's."),
            422,
            (502, "The agent answered something that is not an inventory (an older agent, or a broken one)."),
            (503, "The link to the agent ended during the call, or the agent is too busy to answer."),
            (504, f"The agent did not answer within {INVENTORY_TIMEOUT_S:g} s."),
            params=[_ID],
        ),
        summary="What a linked worker's agent runs: its processes, pools and sessions",
    )
    async def worker_inventory(request: Request) -> Response:
        _require_admin(request)
        worker_id = _path_id(request)
        async with runtime.sessions() as db:
            worker = await queries.get_worker(db, worker_id)
            hostname, agent_url = worker.hostname, worker.agent_url
        inventory = await ask(runtime, worker_id, hostname)
        document: dict[str, Any] = {"worker_id": worker_id, "hostname": hostname, "agent_url": agent_url}
        document.update(inventory.model_dump(mode="json", exclude_none=True))
        return JSONResponse(document)


async def ask(runtime: ManagerRuntime, worker_id: int, hostname: str) -> Inventory:
    """The inventory of a worker linked to this manager, validated.

    Raises:
        ApiError: 409 not linked here; 503 the link ended, or the agent refused as
            overloaded; 504 no answer in time; 502 an answer (or an error) that does
            not fit the contract.
    """
    peer = runtime.linked.get(worker_id)
    if peer is None or peer.closed:
        raise ApiError(
            409,
            "not_linked",
            f"worker {worker_id} ({hostname}) is not linked to this manager: it is offline, "
            "pulls its work over HTTP, or is linked to another manager",
            "id",
        )
    try:
        raw = await peer.call("inventory", timeout=INVENTORY_TIMEOUT_S)
        return read_answer(Inventory, raw)
    except CallTimeout:
        raise ApiError(
            504, "timeout", f"worker {worker_id}'s agent did not answer within {INVENTORY_TIMEOUT_S:g} s"
        ) from None
    except ConnectionLost:
        raise ApiError(503, "unavailable", f"the link to worker {worker_id}'s agent ended") from None
    except BadAnswer as exc:
        log.warning("worker %d's agent answered an inventory that does not fit: %s", worker_id, exc)
        raise ApiError(502, "bad_answer", f"worker {worker_id}'s agent answered: {exc}") from None
    except RemoteError as exc:
        if refusal_of(exc) is RefusalCode.OVERLOADED:
            raise ApiError(503, "overloaded", f"worker {worker_id}'s agent is busy: try again") from None
        raise ApiError(
            502,
            "bad_answer",
            f"worker {worker_id}'s agent refused the inventory ({exc.code}: {exc.message}); "
            "an agent older than the worker view has none",
        ) from None
    except RpcError as exc:
        raise ApiError(502, "bad_answer", f"asking worker {worker_id}'s agent failed: {exc}") from None


__all__ = ["INVENTORY_TIMEOUT_S", "PATH", "WorkerInventory", "ask", "inventory_route"]
