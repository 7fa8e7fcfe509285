"""#12 §1: every request through the proxy leaves an audit line.

Nothing recorded who used the proxy, to which service, for what. Now each proxied request,
HTTP or WebSocket, refused or forwarded, is one line on the ``herder.manager.audit``
logger: who (the token's principal), which service, method, path, status.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import websockets

from herder.rpc.client import connect
from tests.manager.conftest import ManagerFactory
from tests.regress.proxy_support import LOOPBACK, bearer, keyed, recording_server

AUDIT = "herder.manager.audit"


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == AUDIT]


async def test_each_proxied_request_is_an_audit_line(
    make_manager: ManagerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    async with (
        recording_server() as (base, _),
        keyed(make_manager, tmp_path, proxy_allow_networks=LOOPBACK) as keys,
        connect(keys.rpc_url, token=keys.user) as peer,
        httpx.AsyncClient(base_url=keys.manager.url, timeout=30, headers=bearer(keys.user)) as client,
    ):
        await peer.call("register_service", "/bob/dev/web/1.0.0/eu/h/web-1", base + "/", {}, 0)
        assert (await client.post("/proxy/web-1/items?x=1", content=b"a")).status_code == 201
        keys.place("/bob/dev/web/1.0.0/eu/h/web-2", "http://169.254.169.254/")
        assert (await client.get("/proxy/web-2/secrets")).status_code == 403
        assert (await client.delete("/proxy/nobody/x")).status_code == 404
        await client.get("/proxy/web-1/a%20status=999")  # a decoded space cannot forge a field
        ws_url = keys.manager.url.replace("http://", "ws://") + "/proxy/web-1/ws"
        async with websockets.connect(ws_url, additional_headers=bearer(keys.user)) as ws:
            await ws.send("ping")
            await ws.recv()
    lines = audit_lines(caplog)
    expected = [
        ("who=bob", "role=user", "service=web-1", "method=POST", "path=/items?x=1", "status=201"),
        ("who=bob", "service=web-2", "key=/bob/dev/web/1.0.0/eu/h/web-2", "path=/secrets", "status=403"),
        ("who=bob", "service=nobody", "method=DELETE", "path=/x", "status=404"),
        ("who=bob", "service=web-1", "method=WEBSOCKET", "path=/ws", "status=101"),
    ]
    for parts in expected:
        assert any(all(p in line for p in parts) for line in lines), (parts, lines)
    assert any("key=/bob/dev/web/1.0.0/eu/h/web-1" in line for line in lines)
    assert any("path=/a%20status=999 status=201" in line for line in lines), lines
