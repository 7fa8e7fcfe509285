"""The shared front door (``herder.frontdoor``) where the agent's and the manager's tests
do not reach it: an RPC service's own HTTP server, the failure log's budget, the JSON
depth scan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import pytest

from herder.frontdoor import HttpLimits
from herder.frontdoor.authlog import FailureLog
from herder.frontdoor.jsondepth import too_deep
from herder.rpc import HandshakeRefused, Service, SharedSecretVerifier, connect
from tests.regress.edge import address, exchange


@contextlib.asynccontextmanager
async def serving(svc: Service) -> AsyncIterator[str]:
    started = asyncio.Event()
    task = asyncio.create_task(svc.serve("127.0.0.1", 0, started=started))
    try:
        await asyncio.wait_for(started.wait(), 10)
        yield f"http://127.0.0.1:{svc.ws_port}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_rpc_services_http_server_is_bounded() -> None:
    limits = HttpLimits(header_timeout_s=0.3, max_header_bytes=4096, max_body_bytes=1000, max_connections=3)
    async with serving(Service("math", limits=limits)) as url:
        huge = b"GET /rpc HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 20_000
        assert (await exchange(url, huge)).startswith(b"HTTP/1.1 431")
        started = time.monotonic()
        assert await exchange(url, b"GET /rpc HTTP/1.1\r\nHost: x\r\n") == b""
        assert time.monotonic() - started < 3
        body = b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
        assert (await exchange(url, body)).startswith(b"HTTP/1.1 413")
        held = [await asyncio.open_connection(*address(url)) for _ in range(2)]
        try:
            for reader, writer in held:
                writer.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
                assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 404")
            assert (await exchange(url, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
                b"HTTP/1.1 503"
            )
        finally:
            for _, writer in held:
                writer.close()


async def test_a_refused_rpc_token_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="herder.auth")
    async with serving(Service("math", verifier=SharedSecretVerifier("s3cret"))) as url:
        with pytest.raises(HandshakeRefused):
            async with connect(url.replace("http", "ws") + "/rpc", token="guess"):
                pass
    lines = [r.getMessage() for r in caplog.records if r.name == "herder.auth"]
    assert any("from=127.0.0.1 why=unauthorized" in line for line in lines), lines


def test_the_failure_log_keeps_to_its_budget(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="herder.auth")
    now = [0.0]
    failures = FailureLog(lines_per_interval=2, interval_s=10, max_addresses=3, clock=lambda: now[0])
    for _ in range(5):
        failures.failed(who="alice\nforged line", address="10.0.0.1", why="expired")
    failures.failed(who=None, address="10.0.0.2", why="no_credentials")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "who=alice?forged line from=10.0.0.1 why=expired" in lines[0]  # one line, whatever it holds
    assert "counted, not logged" in lines[1]
    now[0] = 10.0  # outside an event loop, the sum comes with the next failure
    failures.failed(who=None, address="10.0.0.1", why="expired")
    assert "3 more times from=10.0.0.1" in caplog.records[3].getMessage()
    for n in range(10):  # the table of addresses stays bounded
        failures.failed(who=None, address=f"10.0.1.{n}", why="expired")
    assert len(failures._windows) == 3


def test_json_depth_skips_strings() -> None:
    assert too_deep(b"[" * 100, 64)
    assert not too_deep(b'["' + b"[" * 100 + b'"]', 64)
    assert not too_deep(b'["\\"' + b"[" * 100 + b'"]', 64)
    assert too_deep(b"[" * 65 + b"]" * 65, 64)
    assert not too_deep(b"[" * 64 + b"]" * 64, 64)


@pytest.mark.parametrize(
    ("name", "bomb"), [("json", b"[" * 200_000), ("msgpack", b"\x91" * 200_000 + b"\xc0")]
)
def test_the_wire_refuses_deep_nesting_without_crashing(name: str, bomb: bytes) -> None:
    """The RPC side of the deep-JSON finding: the codecs and the handshake answer a
    protocol error, never a RecursionError."""
    from herder.wire import WireError, codec_for, decode_hello

    with pytest.raises(WireError):
        codec_for(name).decode(bomb)
    with pytest.raises(WireError):
        decode_hello(b"[" * 200_000)


def test_the_front_door_belongs_to_no_server() -> None:
    """The agent and the manager both build on it, so it may import neither (nor the RPC
    framework, which uses it too)."""
    from tests.test_layering import imports_of

    imported = imports_of("frontdoor")
    assert not any(
        m.startswith(("herder.agent", "herder.manager", "herder.rpc", "herder.cli")) for m in imported
    )
