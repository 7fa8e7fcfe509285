"""#12 §2: the manager had no cap on open connections (the agent has uvicorn's
``limit_concurrency``). Past ``limits.max_connections`` it answers 503 at once."""

from __future__ import annotations

import asyncio

from tests.helpers import poll
from tests.manager.conftest import ManagerFactory
from tests.regress.edge import address, exchange


async def test_past_the_cap_the_manager_answers_503(make_manager: ManagerFactory) -> None:
    # uvicorn counts the arriving connection too: a cap of 3 serves 2 at a time.
    async with make_manager(limits={"max_connections": 3}) as manager:
        held = [await asyncio.open_connection(*address(manager.url)) for _ in range(2)]
        try:
            for reader, writer in held:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                await writer.drain()
                assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
            answer = await exchange(manager.url, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
        finally:
            for _, writer in held:
                writer.close()

        async def served() -> bool:
            probe = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            return (await exchange(manager.url, probe)).startswith(b"HTTP/1.1 200")

        await poll(served, timeout_s=5)  # the cap frees up as connections close
