"""``POST /create-process`` answered below FastAPI: the route's own create, without its path.

Why: starting 200 processes (issue 19, ``bench/bench_spawn.py``) spent ~1-1.5 ms of the
agent's 3.3-4.1 ms of CPU per process in FastAPI's request path (a task, the middleware
chain, routing, the request and response objects), around a create that costs less. The
agent's protocol (``router.front``) takes a plain create's head here (``admit``), reads
its body itself, has it validated (``read``) and runs ``create``, then writes the bytes.

What keeps the answers the route's own:

* the create is the route's: ``routes.create_document`` (the spec from the validated
  request, ``Supervisor.create``, which answers once the record is durable, and the
  status document); the body is validated by the route's model (``CreateRequest``, from
  JSON) under the same JSON depth bound; the answer is encoded as ``JSONResponse``
  encodes it, with its headers (``location``, ``content-length``, ``content-type``, an
  echoed ``X-Request-Id``), counted in ``HttpCounts``; the create runs with the request's
  id in ``REQUEST_ID``, as under ``RequestId``;
* the front door's rules all hold (``Door.admits``: Host, Origin, credentials, the
  declared length within the route's bound); a request it refuses, a body the model
  does not take (or takes only as Python values, not as JSON), a slug that exists, an
  agent that is stopping: not taken here (None), the
  usual way answers them, with the one error document;
* a create that fails once started here (a slug taken meanwhile, a record that could not
  be written...) is answered by the route: the protocol hands the request to the app
  with the exception left in the scope (``routes.CREATE_FAILED``), which the route raises
  where the create would have run (``create_document``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import ValidationError

from herder.agent.api.fastreads import BaseUrls, encode, host_and_id
from herder.agent.api.routes import create_document
from herder.agent.models import CreateRequest
from herder.frontdoor import too_deep
from herder.requestid import REQUEST_ID, valid_id

if TYPE_CHECKING:
    from herder.agent.server import AgentRuntime
    from herder.frontdoor import Door
    from herder.metrics import HttpCounts

CREATE_PATH = "/create-process"
# The key the request is counted under (``herder.metrics.http``).
COUNT_KEY = ("POST", CREATE_PATH, 201)

_JSON = b"content-type: application/json\r\n"
_REQUEST_ID = b"x-request-id: "


class Ticket(NamedTuple):
    """What ``admit`` learnt of a request head that ``create`` needs."""

    base: str  # routes.base_url of the request
    request_id: str | None  # the X-Request-Id RequestId would echo


class FastCreate:
    """Runs the plain creates of one agent, or says to go the usual way (None).

    ``enabled`` False sends every request the usual way (the tests compare the two);
    ``answered`` counts the creates answered here.
    """

    def __init__(
        self, runtime: AgentRuntime, door: Door, counts: HttpCounts | None, max_json_depth: int
    ) -> None:
        self._runtime = runtime
        self._sup = runtime.supervisor
        self._door = door
        self._counts = counts.counts if counts is not None else None
        self._depth = max_json_depth
        self._bases = BaseUrls()
        self.enabled = True
        self.answered = 0

    def admit(self, scope: dict[str, Any]) -> Ticket | None:
        """For the head of a plain ``POST`` of ``CREATE_PATH`` (a body of declared length,
        no query): a ticket if the front door lets it in, else None (the usual way)."""
        if not self.enabled or self._runtime.stopping:
            return None
        host, request_id = host_and_id(scope["headers"])
        if host is None or not self._door.admits(scope):
            return None
        echo = valid_id(request_id) if request_id is not None else None
        return Ticket(self._bases.get(scope["scheme"], host), echo)

    def read(self, body: bytes) -> CreateRequest | None:
        """The request in ``body`` as the route reads it, or None: the route decides (an
        error, or what only its reading takes: a body that is JSON to Python's parser but
        not to pydantic's, e.g. a lone surrogate); a slug that exists is the route's 409."""
        if self._runtime.stopping or too_deep(body, self._depth):
            return None
        try:
            req = CreateRequest.model_validate_json(body)
        except ValidationError:
            return None
        if req.slug in self._sup.units:
            return None  # the route's 409
        return req

    async def create(self, scope: dict[str, Any], req: CreateRequest, ticket: Ticket) -> bytes:
        """Create the process; the answer's headers after the server's own, and its body.

        Raises what the create raises (the protocol then hands the request to the route).
        """
        if ticket.request_id is not None:
            REQUEST_ID.set(ticket.request_id)  # this task's context, and the tasks it starts
        doc = await create_document(self._sup, req, scope, ticket.base)
        body = encode(doc)
        head = [b"location: ", doc["details"].encode("latin-1"), b"\r\ncontent-length: "]
        head += [str(len(body)).encode(), b"\r\n", _JSON]
        if ticket.request_id is not None:
            head += [_REQUEST_ID, ticket.request_id.encode("ascii"), b"\r\n"]
        head += [b"\r\n", body]
        if self._counts is not None:
            self._counts[COUNT_KEY] = self._counts.get(COUNT_KEY, 0) + 1
        self.answered += 1
        return b"".join(head)
