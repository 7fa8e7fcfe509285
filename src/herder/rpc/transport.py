"""Transports: one interface over byte streams and WebSockets.

A transport moves whole payloads (one message each). Byte streams (TCP, Unix sockets,
socketpairs) frame them with ``herder.wire``'s length prefix; a WebSocket carries one
payload per WebSocket message (text for JSON, binary otherwise) and needs no prefix.
Every transport raises ``ConnectionLost`` once the connection is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from herder.rpc.errors import ConnectionLost
from herder.wire import DEFAULT_MAX_FRAME_SIZE, PREFIX, FrameDecoder, NeedData, ProtocolError

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

READ_BYTES = 256 * 1024
# A payload at least this large is written at once, never joined with others (a copy).
CORK_MAX = 64 * 1024


class Transport(Protocol):
    """Moves whole payloads both ways."""

    max_frame_size: int
    text_payloads: bool  # send payloads as text (a WebSocket speaking JSON)

    async def send(self, payload: bytes) -> None:
        """Send one payload; waits while the other side is slow (back-pressure).

        Raises:
            ConnectionLost: the connection is gone.
        """
        ...

    async def recv(self) -> bytes:
        """The next payload.

        Raises:
            ConnectionLost: the connection ended (cleanly or not).
            ProtocolError: the bytes broke the framing (e.g. a frame too large).
        """
        ...

    async def close(self) -> None:
        """Close the connection; idempotent."""
        ...


class StreamTransport:
    """Length-prefixed frames over an asyncio stream (TCP, Unix socket, socketpair)."""

    text_payloads = False

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.max_frame_size = max_frame_size
        self._decoder = FrameDecoder(max_frame_size)
        # Frames sent during this pass of the event loop after its first one, written
        # together at its end (``_uncork``); None when nothing was sent in this pass.
        self._corked: list[bytes] | None = None

    async def send(self, payload: bytes) -> None:
        """Write one frame. The first frame of a pass of the event loop goes out at once
        (no delay for a call made alone); the ones after it in the same pass (the
        answers to a batch of calls) follow together at its end: one system call for
        many small frames, not one each. A large frame is written at once."""
        if len(payload) > self.max_frame_size:
            raise ProtocolError(f"payload of {len(payload)} bytes exceeds the frame limit")
        writer = self._writer
        if writer.is_closing():
            raise ConnectionLost("the connection is closed")
        prefix = PREFIX.pack(len(payload))
        corked = self._corked
        if len(payload) >= CORK_MAX:
            # Not joined to its prefix: a copy of a large payload (a file's chunk) costs
            # more than a write of its own.
            if corked:
                corked.append(prefix)
                self._uncork(keep=True)  # what was sent before it goes first
            else:
                writer.write(prefix)
            writer.write(payload)
            return await self._drain()
        frame = prefix + payload
        if corked is None:
            writer.write(frame)
            self._corked = []
            asyncio.get_running_loop().call_soon(self._uncork)
        else:
            corked.append(frame)
        await self._drain()

    async def _drain(self) -> None:
        """Wait while the connection's buffer is over its high-water mark (back-pressure)."""
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionLost(f"the connection broke: {exc}") from exc

    def _uncork(self, keep: bool = False) -> None:
        """Write the frames held back in this pass (``keep``: the pass goes on)."""
        corked = self._corked
        self._corked = [] if keep and corked is not None else None
        if corked and not self._writer.is_closing():
            self._writer.write(corked[0] if len(corked) == 1 else b"".join(corked))

    async def recv(self) -> bytes:
        while True:
            frame = self._decoder.next_frame()
            if not isinstance(frame, NeedData):
                return frame
            try:
                data = await self._reader.read(READ_BYTES)
            except (ConnectionError, OSError) as exc:
                raise ConnectionLost(f"the connection broke: {exc}") from exc
            if not data:
                self._decoder.feed(b"")
                self._decoder.next_frame()  # raises on a truncated frame
                raise ConnectionLost("the other side closed the connection")
            self._decoder.feed(data)

    async def close(self) -> None:
        if not self._writer.is_closing():
            if self._corked:
                self._uncork(keep=True)  # what was sent goes out before the close
            self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


class ClientWebSocketTransport:
    """A ``websockets`` client connection.

    Payloads stay bytes both ways: a JSON payload is sent as a text message from its
    UTF-8 bytes (``text=True``) and a text message is received as its bytes
    (``decode=False``), with no round trip through ``str``.
    """

    def __init__(self, ws: Any, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        # Imported here, once per connection, not at every message: the websockets
        # package resolves its names lazily, at a cost on each lookup.
        from websockets.exceptions import ConnectionClosed, PayloadTooBig

        self._ws = ws
        self.max_frame_size = max_frame_size
        self.text_payloads = False
        self._closed_error = ConnectionClosed
        self._too_big_error = PayloadTooBig

    async def send(self, payload: bytes) -> None:
        try:
            await self._ws.send(payload, text=self.text_payloads)
        except self._closed_error as exc:
            raise ConnectionLost(f"the WebSocket closed: {exc}") from exc

    async def recv(self) -> bytes:
        try:
            message = await self._ws.recv(decode=False)
        except self._too_big_error as exc:
            raise ProtocolError(str(exc)) from exc
        except self._closed_error as exc:
            raise ConnectionLost(f"the WebSocket closed: {exc}") from exc
        return message if type(message) is bytes else bytes(message)

    async def close(self) -> None:
        await self._ws.close()


class ServerWebSocketTransport:
    """A Starlette (FastAPI) WebSocket accepted by a service's route.

    Messages go through the connection's ASGI ``receive`` and ``send`` when they are
    given (``Service.mount`` gives them): Starlette's ``WebSocket`` methods only add
    state checks the transport makes itself, at a few µs per message; the handshake
    and the close still go through the ``WebSocket``.
    """

    def __init__(
        self,
        ws: WebSocket,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        *,
        receive: Callable[[], Awaitable[Any]] | None = None,
        send: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        self._ws = ws
        self._receive = receive or ws.receive
        self._send = send or ws.send
        self.max_frame_size = max_frame_size
        self.text_payloads = False
        self._closed = False

    async def send(self, payload: bytes) -> None:
        if self._closed:
            raise ConnectionLost("the WebSocket is closed")
        try:
            if self.text_payloads:
                await self._send({"type": "websocket.send", "text": payload.decode()})
            else:
                await self._send({"type": "websocket.send", "bytes": payload})
        except (RuntimeError, ConnectionError, OSError) as exc:
            self._closed = True
            raise ConnectionLost(f"the WebSocket closed: {exc}") from exc

    async def recv(self) -> bytes:
        if self._closed:
            raise ConnectionLost("the WebSocket is closed")
        try:
            message = await self._receive()
        except (RuntimeError, ConnectionError, OSError) as exc:
            self._closed = True
            raise ConnectionLost(f"the WebSocket closed: {exc}") from exc
        if message["type"] == "websocket.disconnect":
            self._closed = True
            raise ConnectionLost("the other side closed the WebSocket")
        data = message.get("bytes")
        if data is None:
            data = (message.get("text") or "").encode()
        if len(data) > self.max_frame_size:
            raise ProtocolError(f"message of {len(data)} bytes exceeds the frame limit")
        return data if type(data) is bytes else bytes(data)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(RuntimeError, ConnectionError, OSError):
                await self._ws.close()
