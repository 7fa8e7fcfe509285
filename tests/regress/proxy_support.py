"""What the proxy's regression modules share: a keyed manager, its keys, a recording server."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herder.auth import init_keys
from herder.manager.server import Manager
from herder.registry.index import Registration
from herder.registry.names import ServiceKey
from tests.manager.conftest import ManagerFactory

LOOPBACK = ["127.0.0.0/8", "::1/128"]


@dataclass
class Keyed:
    """A manager with keys on, and an access token each for ``bob`` (user) and ``root`` (admin)."""

    manager: Manager
    user: str
    admin: str

    @property
    def rpc_url(self) -> str:
        return self.manager.url.replace("http://", "ws://") + "/rpc"

    def place(self, key: str, url: str, owner: str = "bob", role: str = "user") -> None:
        """Put a registration straight into the registry, past the registration's check: what
        the registry may hold when a name resolved elsewhere at registration (DNS rebinding).
        The proxy must decide again at every request."""
        assert self.manager.runtime is not None
        self.manager.runtime.services.index.add(
            Registration(
                key=ServiceKey.parse(key),
                url=url,
                owner=owner,
                owner_role=role,
                registered_at=time.time(),
            )
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def keyed(make_manager: ManagerFactory, tmp_path: Path, **config: Any) -> AsyncIterator[Keyed]:
    init_keys(tmp_path / "manager")
    async with make_manager(**config) as manager:
        assert manager.runtime is not None
        assert manager.authority is not None
        async with manager.runtime.transaction() as db:
            bob = await manager.authority.issue_key(db, "bob", "user")
            root = await manager.authority.issue_key(db, "root", "admin")
        user, _ = manager.authority.token_for(bob.key)
        admin, _ = manager.authority.token_for(root.key)
        yield Keyed(manager, user, admin)


@contextlib.asynccontextmanager
async def recording_server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP and WebSocket server on loopback; each request's path and headers are kept."""
    from aiohttp import WSMsgType, web

    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append({"path": request.path_qs, "headers": dict(request.headers)})
        return web.json_response({"body": (await request.read()).decode()}, status=201)

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        seen.append({"path": request.path_qs, "headers": dict(request.headers)})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(f"echo: {message.data}")
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_echo)
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()
