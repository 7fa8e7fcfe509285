"""``X-Request-Id``: a client's id for one request, echoed and passed on.

smartmob-agent's clients tag each request with ``X-Request-Id`` and look for it on the
answer, to match the two in their logs; what the request sets going (an agent's
download of the process's source archive) carries it too, so one id follows the work
across hosts. ``RequestId`` is the ASGI middleware that does both for the agent and the
manager: it echoes the header on the answer and holds the id in ``REQUEST_ID`` while
the request is served. asyncio tasks copy the context they are created in, so work a
request starts (a process's start, with its download) still sees its id later.

An id is 1 to ``MAX_LENGTH`` visible ASCII characters; anything else is ignored (not
echoed, not passed on) rather than refused: the header is the client's aid, not part
of the request. None is made up for a request without one.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

HEADER = "X-Request-Id"
MAX_LENGTH = 200
REQUEST_ID: ContextVar[str | None] = ContextVar("herder_request_id", default=None)

_NAME = HEADER.lower().encode("latin-1")


def valid_id(value: bytes) -> str | None:
    """``value`` as an id if it is 1 to ``MAX_LENGTH`` visible ASCII characters, else None."""
    if not 0 < len(value) <= MAX_LENGTH or not all(0x21 <= byte <= 0x7E for byte in value):
        return None
    return value.decode("ascii")


class RequestId:
    """ASGI middleware: echo a request's ``X-Request-Id`` and keep it in ``REQUEST_ID``.

    Plain ASGI (no per-request objects but a closure), so a request without the header
    costs one scan of its header list.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((value for name, value in scope["headers"] if name == _NAME), None)
        request_id = valid_id(raw) if raw is not None else None
        if request_id is None:
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == _NAME for name, _ in headers):  # a proxied answer's own
                    headers.append((_NAME, request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
