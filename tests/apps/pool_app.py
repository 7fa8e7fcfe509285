"""A small HTTP + WebSocket app that tests run behind a pool.

Run as ``python pool_app.py --port N`` (or with ``$PORT``). Endpoints:

* ``GET /`` and ``GET /pid``: this instance's pid, as text;
* ``GET /ready``: 200 once ``--ready-after`` seconds have passed since start, 503 before;
* ``GET /slow?s=X``: answers after X seconds (a request in flight for drain tests);
* ``POST /echo``: the request body back, whatever its framing (chunked uploads);
* ``GET /headers``: the request's headers as JSON (what the proxy forwarded);
* ``GET /sse?n=N``: N server-sent events, streamed;
* ``GET /big?bytes=N``: N bytes of body;
* ``GET /count``: requests this instance saw, as text;
* ``GET /ws``: a WebSocket that echoes each message (closed with 1001, going away, when
  the app is stopped: SIGTERM);
* ``GET /version``: ``$APP_VERSION``, as text (which version of a deploy answered).

``--start-delay S`` sleeps before listening, to make cold starts observable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import weakref

from aiohttp import WSCloseCode, WSMsgType, web

START = time.monotonic()
SEEN = {"requests": 0}
SOCKETS: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()


async def pid(_: web.Request) -> web.Response:
    return web.Response(text=str(os.getpid()))


async def count(_: web.Request) -> web.Response:
    return web.Response(text=str(SEEN["requests"]))


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "1")))
    return web.Response(text=f"slow done {os.getpid()}")


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


async def headers(request: web.Request) -> web.Response:
    return web.json_response({k.lower(): v for k, v in request.headers.items()})


async def sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i in range(int(request.query.get("n", "3"))):
        await response.write(f"data: event {i}\n\n".encode())
        await asyncio.sleep(0.01)
    await response.write_eof()
    return response


async def big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * int(request.query.get("bytes", "1000000")))


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    SOCKETS.add(ws)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


async def version(_: web.Request) -> web.Response:
    return web.Response(text=os.environ.get("APP_VERSION", ""))


async def close_sockets(_: web.Application) -> None:
    """Stopped (SIGTERM): each open WebSocket gets its close frame, as a server should."""
    for ws in list(SOCKETS):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")


def make_app(ready_after: float) -> web.Application:
    @web.middleware
    async def counting(request: web.Request, handler):  # type: ignore[no-untyped-def]
        SEEN["requests"] += 1
        return await handler(request)

    async def ready(_: web.Request) -> web.Response:
        ok = time.monotonic() - START >= ready_after
        return web.Response(status=200 if ok else 503, text="ready" if ok else "not yet")

    app = web.Application(middlewares=[counting])
    app.router.add_get("/", pid)
    app.router.add_get("/pid", pid)
    app.router.add_get("/count", count)
    app.router.add_get("/ready", ready)
    app.router.add_get("/slow", slow)
    app.router.add_post("/echo", echo)
    app.router.add_get("/headers", headers)
    app.router.add_get("/sse", sse)
    app.router.add_get("/big", big)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/version", version)
    app.on_shutdown.append(close_sockets)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0")))
    parser.add_argument("--start-delay", type=float, default=0.0)
    parser.add_argument("--ready-after", type=float, default=0.0)
    args = parser.parse_args()
    time.sleep(args.start_delay)
    web.run_app(make_app(args.ready_after), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
