"""A raw HTTP/1.1 keep-alive connection for tests that check answers byte for byte
(the agent's fast paths: tests/test_status_fastpath.py, tests/test_create_fastpath.py)."""

from __future__ import annotations

import asyncio

from herder.agent import Agent

# An answer: its status line, its headers but ``date``, its body.
Answer = tuple[bytes, list[bytes], bytes]


class Connection:
    """One keep-alive connection to the agent, raw bytes both ways."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, agent: Agent) -> Connection:
        host, port = agent.url.removeprefix("http://").rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, *data: bytes) -> None:
        self.writer.write(b"".join(data))
        await self.writer.drain()

    async def answer(self) -> Answer:
        """The next answer (after any interim one): status line, headers but ``date``, body."""
        async with asyncio.timeout(15):
            while True:
                head = await self.reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 100 "):
                    break
            lines = head[:-4].split(b"\r\n")
            headers = [ln for ln in lines[1:] if not ln.lower().startswith(b"date:")]
            length = next(
                int(ln.split(b":", 1)[1]) for ln in headers if ln.lower().startswith(b"content-length:")
            )
            return lines[0], headers, await self.reader.readexactly(length)

    async def ask(self, *data: bytes) -> Answer:
        await self.send(*data)
        return await self.answer()

    def close(self) -> None:
        self.writer.close()
