"""Readiness checks: is an instance ready to take requests?

Two kinds, as the pool's spec says: the instance's port accepts a TCP connection, or
``GET <path>`` on it answers 2xx. A check is one attempt; the pool's controller
repeats it on a short interval while the instance starts, because the first request
to an empty pool waits on it: each millisecond between "listening" and "seen ready"
is a millisecond of cold start.
"""

from __future__ import annotations

import asyncio
import contextlib

from herder.agent.router.http1 import find_head_end

CHECK_TIMEOUT_S = 2.0
# Fast at first (a cold start is usually quick), then gentler on a slow starter.
FAST_INTERVAL_S = 0.002
FAST_ATTEMPTS = 500
SLOW_INTERVAL_S = 0.05


def interval_after(attempts: int) -> float:
    """Seconds to wait before the next attempt, after ``attempts`` failed ones."""
    return FAST_INTERVAL_S if attempts < FAST_ATTEMPTS else SLOW_INTERVAL_S


async def check(host: str, port: int, path: str | None) -> bool:
    """One attempt: True if the port accepts (and, with ``path``, GET answers 2xx)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            if path is None:
                return True
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: herder-ready-check\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            head = b""
            while find_head_end(head) < 0 and len(head) < 65536:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                head += chunk
            parts = head.split(b" ", 2)
            return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1][:1] == b"2"
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
