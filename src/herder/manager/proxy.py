"""``/proxy/<service id>/...``: a public URL on the manager for each registered service.

HTTP requests and WebSockets under ``/proxy/<id>/`` go to the service the registry knows
by that id, at the registered URL's scheme, host and port, with the rest of the path
and the query string. The manager's own credentials stay here: ``Authorization`` (the
caller's token for the manager) and cookies are not forwarded; hop-by-hop headers are
dropped and ``X-Forwarded-For``, ``-Host`` and ``-Proto`` are set, as the agent's router
does. A registered URL that points at a link-local or unspecified address (cloud
metadata services live there) is never proxied.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import urllib.parse
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse

from herder.apierrors import ApiError, error_response

if TYPE_CHECKING:
    from herder.manager.server import ManagerRuntime

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
NOT_FORWARDED = frozenset({"authorization", "cookie"})  # the manager's, not the service's
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PROXY_TIMEOUT_S = 60.0


def _target(runtime: ManagerRuntime, service_id: str, rest: str, query: str, websocket: bool) -> str:
    """The URL to forward to, or an ``ApiError`` (404 unknown service, 502 refused target)."""
    registration = runtime.links.services.index.get(service_id)
    if registration is None:
        raise ApiError(404, "not_found", f"no live service with id {service_id!r}", "id")
    parts = urllib.parse.urlsplit(registration.url)
    host = parts.hostname or ""
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        if address.is_link_local or address.is_unspecified or address.is_multicast:
            raise ApiError(502, "bad_gateway", f"the service's address {host} is not proxied", "id")
    secure = parts.scheme in ("https", "wss")
    scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    url = f"{scheme}://{parts.netloc}/{rest}"
    return f"{url}?{query}" if query else url


def _forwarded_headers(headers: Any, client: Any, host: str, proto: str) -> dict[str, str]:
    out = {
        k: v
        for k, v in headers.items()
        if k.lower() not in HOP_BY_HOP | NOT_FORWARDED
        and not k.lower().startswith(("sec-websocket", "x-forwarded-"))
    }
    if client is not None:
        out["X-Forwarded-For"] = client.host
    out["X-Forwarded-Host"] = host
    out["X-Forwarded-Proto"] = proto
    return out


def install(app: FastAPI, runtime: ManagerRuntime) -> None:
    """The proxy's routes (HTTP and WebSocket), on the manager's app."""
    clients: dict[str, Any] = {}

    def client() -> Any:
        import httpx

        if "http" not in clients:
            clients["http"] = httpx.AsyncClient(timeout=PROXY_TIMEOUT_S, follow_redirects=False)
        return clients["http"]

    @app.api_route("/proxy/{id}/{path:path}", methods=METHODS, summary="A registered service, by its id")
    async def proxy_http(request: Request) -> Response:
        import httpx

        url = _target(
            runtime, request.path_params["id"], request.path_params["path"], request.url.query, False
        )
        headers = _forwarded_headers(
            request.headers, request.client, request.headers.get("host", ""), request.url.scheme
        )
        outgoing = client().build_request(request.method, url, headers=headers, content=request.stream())
        try:
            answer = await client().send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            raise ApiError(502, "bad_gateway", f"the service did not answer: {exc}", "id") from None

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            finally:
                await answer.aclose()

        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(body(), status_code=answer.status_code, headers=kept)

    @app.websocket("/proxy/{id}/{path:path}")
    async def proxy_websocket(ws: WebSocket) -> None:
        import websockets

        try:
            url = _target(runtime, ws.path_params["id"], ws.path_params["path"], ws.url.query, True)
        except ApiError as exc:
            await ws.send_denial_response(error_response(exc.status, exc.code, str(exc), exc.field))
            return
        headers = _forwarded_headers(ws.headers, ws.client, ws.headers.get("host", ""), "ws")
        try:
            upstream = await websockets.connect(url, additional_headers=headers, compression=None)
        except (OSError, websockets.InvalidHandshake) as exc:
            await ws.send_denial_response(
                error_response(502, "bad_gateway", f"the service refused: {exc}", "id")
            )
            return
        await ws.accept()
        await _relay(ws, upstream)

    async def close_clients() -> None:
        if "http" in clients:
            await clients.pop("http").aclose()

    runtime.on_stop.append(close_clients)


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
