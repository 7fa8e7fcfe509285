"""``/proxy/<service id>/...``: a public URL on the manager for each registered service.

HTTP requests and WebSockets under ``/proxy/<id>/`` go to the service the registry knows
by that id, at the registered URL's scheme, host and port, with the rest of the path
and the query string.

* **Where**: ``herder.manager.targets`` resolves the registered host once, checks every
  address (loopback, link-local, the manager's own address ... are refused unless an
  admin allowed their network) and the connection goes to the checked address, with the
  registered name as ``Host`` and TLS SNI. Decided at every request, not only at
  registration: a name's DNS answer may change. A refusal is 403 ``forbidden_target``.
* **What is sent**: the caller's headers, less the manager's own credentials
  (``Authorization``, cookies), hop-by-hop headers and whatever the caller claimed about
  forwarding; ``Host`` is the registered URL's authority (never the manager's, which
  could make the target believe it is spoken to locally); ``Forwarded`` (RFC 7239) and
  ``X-Forwarded-For``, ``-Host``, ``-Proto`` name the caller and the manager.
* **Audit**: every request (HTTP or WebSocket, forwarded or refused) is one line on the
  ``herder.manager.audit`` logger: who (the token's principal), which service, method,
  path, status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import urllib.parse
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse

from herder import egress
from herder.apierrors import ApiError, error_response
from herder.manager.errors import TargetRefused
from herder.manager.targets import Pinned
from herder.principals import principal_of

if TYPE_CHECKING:
    from herder.manager.server import ManagerRuntime
    from herder.openapi_docs import ApiDocs
    from herder.registry import Registration

audit = logging.getLogger("herder.manager.audit")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
NOT_FORWARDED = frozenset({"authorization", "cookie", "forwarded"})  # the manager's, or claims
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PROXY_TIMEOUT_S = 60.0
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _registration(runtime: ManagerRuntime, service_id: str) -> Registration:
    registration = runtime.services.index.get(service_id)
    if registration is None:
        raise ApiError(404, "not_found", f"no live service with id {service_id!r}", "id")
    return registration


async def _pin(runtime: ManagerRuntime, registration: Registration) -> Pinned:
    """The registration's checked address, or an ``ApiError`` (403 refused target, 502 a
    name that does not resolve)."""
    try:
        return await runtime.targets.pin(registration.url, registration.owner_role)
    except TargetRefused as exc:
        raise ApiError(exc.http_status, exc.code, str(exc), "id") from None  # the path's id is to blame
    except egress.ResolveError as exc:
        raise ApiError(502, "bad_gateway", f"the service's address: {exc}", "id") from None


def _node(address: str) -> str:
    """An address as a ``Forwarded`` node: IPv6 in brackets and quotes (RFC 7239 §6)."""
    return f'"[{address}]"' if ":" in address else address


def _value(text: str) -> str:
    """A ``Forwarded`` parameter's value: a token as it is, anything else quoted."""
    if _TOKEN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _forwarded_headers(scope: Any, headers: Any, pinned: Pinned, proto: str) -> dict[str, str]:
    """What goes upstream: the caller's end-to-end headers and who asked, through whom."""
    out = {
        k: v
        for k, v in headers.items()
        if k.lower() not in HOP_BY_HOP | NOT_FORWARDED
        and not k.lower().startswith(("sec-websocket", "x-forwarded-"))
    }
    host = headers.get("host", "")
    client = scope.get("client")
    server = scope.get("server")
    parts = []
    if client:
        parts.append(f"for={_node(client[0])}")
        out["X-Forwarded-For"] = client[0]
    if server:
        parts.append(f"by={_node(server[0])}")
    if host:
        parts.append(f"host={_value(host)}")
    parts.append(f"proto={proto}")
    out["Forwarded"] = ";".join(parts)
    out["X-Forwarded-Host"] = host
    out["X-Forwarded-Proto"] = proto
    out["Host"] = pinned.authority
    return out


def _word(text: str) -> str:
    """``text`` as one word of an audit line: a decoded ``%0A`` in a path cannot forge a line."""
    return urllib.parse.quote(text, safe="/?=&:@!$'()*+,;-._~[]") or "-"


def _audit(scope: Any, service_id: str, registration: Registration | None, method: str, status: int) -> None:
    who, role = principal_of(scope)
    client = scope.get("client")
    path = "/" + scope.get("path_params", {}).get("path", "")
    query = scope.get("query_string", b"").decode("latin-1")
    audit.info(
        "proxy who=%s role=%s service=%s key=%s method=%s path=%s status=%d client=%s",
        _word(who or "-"),
        role or "-",
        _word(service_id),
        _word(str(registration.key)) if registration is not None else "-",
        method,
        _word(f"{path}?{query}" if query else path),
        status,
        client[0] if client else "-",
    )


def _openapi(docs: ApiDocs) -> dict[str, Any]:
    """The proxy route's parameters and answers: the service's own, or the proxy's errors."""
    from herder.openapi_docs import path_param

    return {
        "parameters": [
            path_param("id", "The service's id, as the registry gives it (GET /services)."),
            path_param("path", "The rest of the path, sent to the service (the query string too)."),
        ],
        "responses": {
            "200": {"description": "The service's answer, as it gave it (any other status too)."},
            "default": {"description": "The service's own answer, as it gave it."},
            **docs.errors(
                (403, "Foreign Host or Origin, or the service's address is not one the proxy may reach."),
                (404, "No live service with that id."),
                408,
                413,
                502,
            ),
        },
    }


def install(app: FastAPI, runtime: ManagerRuntime, docs: ApiDocs) -> None:
    """The proxy's routes (HTTP and WebSocket), on the manager's app; ``docs`` describes
    them in its OpenAPI document."""
    clients: dict[str, Any] = {}

    def client() -> Any:
        import httpx

        if "http" not in clients:
            clients["http"] = httpx.AsyncClient(
                timeout=PROXY_TIMEOUT_S, follow_redirects=False, trust_env=False
            )
        return clients["http"]

    async def proxy_http(request: Request) -> Response:
        service_id = request.path_params["id"]
        registration: Registration | None = None
        status = 500
        try:
            registration = _registration(runtime, service_id)
            answer = await _send(client(), request, await _pin(runtime, registration))
            status = answer.status_code
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            _audit(request.scope, service_id, registration, request.method, status)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            finally:
                await answer.aclose()

        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(body(), status_code=answer.status_code, headers=kept)

    # One route for every method; FastAPI would give its operations one operationId, which
    # OpenAPI forbids, so the docs describe them (when the document is built).
    app.add_api_route("/proxy/{id}/{path:path}", proxy_http, methods=METHODS, include_in_schema=False)
    docs.document_path(
        "/proxy/{id}/{path}", METHODS, _openapi(docs), summary="A registered service, by its id"
    )

    @app.websocket("/proxy/{id}/{path:path}")
    async def proxy_websocket(ws: WebSocket) -> None:
        service_id = ws.path_params["id"]
        registration: Registration | None = None
        try:
            registration = _registration(runtime, service_id)
            upstream = await _dial(ws, await _pin(runtime, registration))
        except ApiError as exc:
            _audit(ws.scope, service_id, registration, "WEBSOCKET", exc.status)
            await ws.send_denial_response(error_response(exc.status, exc.code, str(exc), exc.field))
            return
        _audit(ws.scope, service_id, registration, "WEBSOCKET", 101)
        await ws.accept()
        await _relay(ws, upstream)

    async def close_clients() -> None:
        if "http" in clients:
            await clients.pop("http").aclose()

    runtime.on_stop.append(close_clients)


async def _send(http: Any, request: Request, pinned: Pinned) -> Any:
    """Send the request to the checked address; the answer, streamed. 502 if it fails."""
    import httpx

    url = pinned.url("http", request.path_params["path"], request.url.query)
    headers = _forwarded_headers(request.scope, request.headers, pinned, request.url.scheme)
    extensions = {"sni_hostname": pinned.host} if pinned.secure else {}
    outgoing = http.build_request(
        request.method, url, headers=headers, content=request.stream(), extensions=extensions
    )
    try:
        return await http.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        raise ApiError(502, "bad_gateway", f"the service did not answer: {exc}", "id") from None


async def _dial(ws: WebSocket, pinned: Pinned) -> Any:
    """Open the upstream WebSocket at the checked address (the URL keeps the registered name,
    for ``Host`` and TLS). 502 if it fails."""
    import websockets

    url = pinned.named_url("ws", ws.path_params["path"], ws.url.query)
    headers = _forwarded_headers(ws.scope, ws.headers, pinned, "wss" if ws.url.scheme == "wss" else "ws")
    headers.pop("Host")  # the client writes it from the URL: the registered authority
    options: dict[str, Any] = {"host": str(pinned.address), "port": pinned.port}
    if pinned.secure:
        options["server_hostname"] = pinned.host
    try:
        return await websockets.connect(
            url,
            additional_headers=headers,
            compression=None,
            open_timeout=PROXY_TIMEOUT_S,
            proxy=None,  # no proxy from the environment: the connection goes to the checked address
            **options,
        )
    except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
        raise ApiError(502, "bad_gateway", f"the service refused: {exc}", "id") from None


async def _relay(ws: WebSocket, upstream: Any) -> None:
    """Frames both ways until either side closes; then close the other."""

    async def down() -> None:
        async for message in upstream:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_text(message)

    async def up() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
        await upstream.close()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
            await ws.close()
