"""#12 §1: no spelling of a link-local or cloud-metadata address gets through the proxy.

The proxy refused ``169.254.169.254`` written as such, and nothing else: ``2852039166``
(the same address as the C resolver reads a decimal number), ``::ffff:169.254.169.254``
and a name resolving there passed the literal-IP check. Now every address a URL resolves
to is checked, at registration and at every request, before anything is connected to.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import websockets

from herder.rpc.client import connect
from herder.rpc.errors import RemoteError
from tests.manager.conftest import ManagerFactory
from tests.regress.proxy_support import bearer, keyed

FORMS = [
    "http://169.254.169.254/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[fe80::1]/",
    "http://100.100.100.200/",  # a cloud's metadata service outside 169.254.0.0/16
    "http://[fd00:ec2::254]/",
    "http://224.0.0.1/",
    "http://0/",
    "http://[::]/",
]


async def test_link_local_and_metadata_targets_are_refused_in_every_spelling(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    async with (
        keyed(make_manager, tmp_path) as keys,
        httpx.AsyncClient(base_url=keys.manager.url, timeout=30, headers=bearer(keys.user)) as client,
    ):
        for token, owner in ((keys.user, "bob"), (keys.admin, "root")):
            async with connect(keys.rpc_url, token=token) as peer:
                for n, url in enumerate(FORMS):
                    key = f"/{owner}/dev/meta/1.0.0/eu/h/{owner}{n}"
                    with pytest.raises(RemoteError, match="url") as refused:
                        await peer.call("register_service", key, url, {}, 0)
                    assert "not proxied" in str(refused.value), url
                    keys.place(key, url, owner, "admin" if owner == "root" else "user")
                    started = time.monotonic()
                    answer = await client.get(f"/proxy/{owner}{n}/latest/meta-data/")
                    assert answer.status_code == 403, (url, answer.text)
                    assert answer.json()["error"] == "forbidden_target"
                    assert time.monotonic() - started < 5, "the proxy tried to connect first"
                    ws_url = keys.manager.url.replace("http://", "ws://") + f"/proxy/{owner}{n}/x"
                    with pytest.raises(websockets.InvalidStatus) as denied:
                        async with websockets.connect(ws_url, additional_headers=bearer(keys.user)):
                            pass
                    assert denied.value.response.status_code == 403
