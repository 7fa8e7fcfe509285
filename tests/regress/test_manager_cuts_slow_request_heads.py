"""#12 §2: connections that dribble their request head were all still open after 60 s
on the manager (the agent cuts them at its header deadline). The manager now closes a
connection whose head is not complete within ``limits.header_timeout_s``, however busy
the client keeps it."""

from __future__ import annotations

import asyncio
import time

from tests.manager.conftest import ManagerFactory
from tests.regress.edge import address

DEADLINE_S = 0.5


async def dribble(url: str) -> float:
    """Send a request head one byte every 50 ms; seconds until the server hung up."""
    reader, writer = await asyncio.open_connection(*address(url))
    started = time.monotonic()
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 1000
    try:
        for byte in head:
            writer.write(bytes([byte]))
            try:
                await writer.drain()
                await asyncio.wait_for(reader.read(1), 0.05)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            break  # read() returned: b"" is the server closing
        return time.monotonic() - started
    finally:
        writer.close()


async def test_dribbled_heads_are_cut_at_the_header_deadline(make_manager: ManagerFactory) -> None:
    async with make_manager(limits={"header_timeout_s": DEADLINE_S}) as manager:
        held = await asyncio.gather(*(dribble(manager.url) for _ in range(5)))
        assert all(DEADLINE_S * 0.8 <= seconds < DEADLINE_S + 2 for seconds in held), held
