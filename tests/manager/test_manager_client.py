"""``herder.rpc.ManagerClient`` against a real manager (both databases): URLs, tokens, retries.

The one manager client serves the CLI, the agent's link and discovery; these tests buy
tokens from a manager with auth on, from one with auth off, from a port nobody listens
on, and from a loopback server that fails twice with 503 before it answers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from herder.auth import init_keys
from herder.manager.server import Manager
from herder.rpc import ConnectionLost, ManagerClient, TokenRefused, connect
from tests.helpers import HERDER
from tests.manager.conftest import ManagerFactory


@pytest.fixture
async def secured(make_manager: ManagerFactory, tmp_path: Path) -> AsyncIterator[Manager]:
    init_keys(tmp_path / "manager")
    async with make_manager() as manager:
        yield manager


async def issue(manager: Manager, user: str, role: str = "user") -> tuple[str, str]:
    assert manager.runtime is not None
    assert manager.authority is not None
    async with manager.runtime.transaction() as db:
        issued = await manager.authority.issue_key(db, user, role, 3600)
    return issued.key, issued.id


async def revoke(manager: Manager, key_id: str) -> None:
    """Revoke the key and have the manager read its keys again now (not at its next tick)."""
    assert manager.runtime is not None
    assert manager.authority is not None
    async with manager.runtime.transaction() as db:
        assert await type(manager.authority).revoke(db, key_id=key_id) == 1
    async with manager.runtime.transaction() as db:
        await manager.authority.refresh(db)


class Clock:
    """Unix time that the test moves."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_urls_are_normalised() -> None:
    client = ManagerClient("https://m.example:8443/")
    assert (client.base_url, client.rpc_url) == ("https://m.example:8443", "wss://m.example:8443/rpc")
    client = ManagerClient("ws://127.0.0.1:8020/rpc")
    assert (client.base_url, client.rpc_url) == ("http://127.0.0.1:8020", "ws://127.0.0.1:8020/rpc")


async def test_a_key_buys_a_token_kept_until_most_of_its_life_has_passed(secured: Manager) -> None:
    key, _ = await issue(secured, "alice")
    clock = Clock()
    client = ManagerClient(secured.url + "/", key=key, clock=clock)
    first = await client.credential()
    assert first is not None
    assert await client.credential() == first  # kept, not bought again
    async with connect(client.rpc_url, token=first) as registry:
        assert await registry.call("find_services", "/alice") == []
    bought = client._bought
    assert bought is not None
    assert bought.renew_at == pytest.approx(clock.now + 0.8 * (bought.expires_at - clock.now))
    clock.now = bought.renew_at
    assert await client.credential() != first  # a new one, bought at renew time
    client.forget_token()
    assert await client.credential() is not None


async def test_without_a_key_the_token_given_is_the_credential(secured: Manager) -> None:
    assert await ManagerClient(secured.url, token="shared").credential() == "shared"
    assert await ManagerClient(secured.url).credential() is None
    with pytest.raises(ValueError, match="no key"):
        await ManagerClient(secured.url).buy_token()


async def test_a_revoked_key_is_refused_at_once_with_the_managers_reason(secured: Manager) -> None:
    key, key_id = await issue(secured, "carol")
    await revoke(secured, key_id)
    client = ManagerClient(secured.url, key=key, backoff_s=30)  # a retry would time the test out
    with pytest.raises(TokenRefused) as refused:
        await client.buy_token()
    assert (refused.value.status, refused.value.code) == (401, "revoked")
    assert "refused the key" in str(refused.value)
    with pytest.raises(TokenRefused):
        await asyncio.to_thread(client.buy_token_sync)


async def test_a_manager_without_auth_says_it_sells_no_tokens(manager: Manager) -> None:
    client = ManagerClient(manager.url, key="anything", backoff_s=30)
    with pytest.raises(TokenRefused) as refused:
        await client.buy_token()
    assert refused.value.status == 404
    assert "auth is off" in str(refused.value)
    with pytest.raises(TokenRefused, match="404"):
        await client.jwks()


async def test_the_sync_entry_and_the_jwks(secured: Manager) -> None:
    key, _ = await issue(secured, "dan")
    client = ManagerClient(secured.url, key=key)
    bought = await asyncio.to_thread(client.buy_token_sync)
    assert bought.expires_at > time.time()
    assert await client.credential() == bought.token  # one cache for both entries
    assert [k["kty"] for k in (await client.jwks())["keys"]] == ["OKP"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_an_unreachable_manager_is_tried_again_then_reported() -> None:
    client = ManagerClient(f"http://127.0.0.1:{closed_port()}", key="k", attempts=3, backoff_s=0.01)
    with pytest.raises(ConnectionLost, match="cannot reach the manager"):
        await client.buy_token()
    with pytest.raises(ConnectionLost):
        await asyncio.to_thread(client.buy_token_sync)


async def test_a_5xx_is_retried_with_backoff_until_an_answer() -> None:
    """A loopback server answers 503 twice (a manager restarting), then sells the token."""
    answers = [503, 503, 200]
    seen: list[float] = []
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append((await reader.readuntil(b"\r\n\r\n")).lower())
        seen.append(time.monotonic())
        status = answers.pop(0)
        body = json.dumps({"token": "t", "expires_at": time.time() + 3600}).encode()
        if status != 200:
            body = b'{"error": "unavailable", "message": "restarting"}'
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client = ManagerClient(f"http://127.0.0.1:{port}", key="the-key", backoff_s=0.05)
        assert (await client.buy_token()).token == "t"
        assert len(seen) == 3
        assert all(h.startswith(b"post /auth/token ") and b"bearer the-key" in h for h in heads)
        assert seen[2] - seen[1] >= seen[1] - seen[0] >= 0.05  # 0.05 s, then 0.1 s
        answers[:] = [503, 503, 503]
        with pytest.raises(TokenRefused) as refused:
            await client.buy_token()
        assert (refused.value.status, refused.value.code, refused.value.detail) == (
            503,
            "unavailable",
            "restarting",
        )


async def test_the_cli_prints_a_token_or_the_managers_refusal(secured: Manager, tmp_path: Path) -> None:
    key, key_id = await issue(secured, "erin")
    key_file = tmp_path / "erin.key"
    key_file.write_text(key + "\n")

    def herder_token() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HERDER, "keys", "token", "--key-file", str(key_file), "--manager", secured.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    printed = await asyncio.to_thread(herder_token)
    assert printed.returncode == 0, printed.stderr
    async with connect(ManagerClient(secured.url).rpc_url, token=printed.stdout.strip()) as registry:
        assert await registry.call("find_services", "/erin") == []
    await revoke(secured, key_id)
    refused = await asyncio.to_thread(herder_token)
    assert refused.returncode == 1
    assert "401:" in refused.stderr
