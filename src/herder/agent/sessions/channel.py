"""The channel between the agent and a session's host: frames read straight into place.

Both ends of the socketpair speak the protocol's length-prefixed frames (protocol.md
§2.1), as ``herder.rpc.StreamTransport`` does over TCP; this transport does the same job
with fewer copies, because a session's channel carries files in pieces of up to 8 MiB.
A ``StreamReader`` copies every byte three times before a frame is whole (into its
buffer, out of it, into the frame decoder, and out again); here the kernel writes a
large frame's bytes directly into the buffer that becomes the payload
(``asyncio.BufferedProtocol``), and small frames, most of them, are cut from one
scratch buffer with one copy. A large payload is written as it is, not joined with its
prefix.

Payloads are ``bytearray`` for large frames (the buffer they were read into: no copy to
make them ``bytes``); the codecs and ``herder.wire.peek_envelope`` take either.

Back-pressure both ways: reading pauses while more than ``MAX_QUEUED_BYTES`` of whole
frames wait for ``recv``, and ``send`` waits while the kernel and the write buffer are
full, as ``StreamWriter.drain`` does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
from typing import cast

from herder.rpc import ConnectionLost
from herder.wire import DEFAULT_MAX_FRAME_SIZE, FrameTooLarge, ProtocolError

PREFIX = struct.Struct(">I")
SCRATCH_BYTES = 256 * 1024  # where small frames (and every prefix) are read
LARGE_FRAME = 64 * 1024  # from this size, a frame gets a buffer of its own, read into in place
MAX_QUEUED_BYTES = 32 * 1024 * 1024  # whole frames waiting for recv before reading pauses
WRITE_HIGH_WATER = 8 * 1024 * 1024  # send waits while more than this is buffered


class _FrameProtocol(asyncio.BufferedProtocol):
    """Cuts the byte stream into frames, reading large ones into their own buffers."""

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self.transport: asyncio.Transport | None = None
        self._scratch = bytearray(SCRATCH_BYTES)
        self._start = 0  # the first byte of the scratch not yet cut into a frame
        self._end = 0  # the end of the bytes read into the scratch
        self._large: bytearray | None = None  # a large frame being read into place
        self._large_got = 0
        self.frames: collections.deque[bytes | bytearray] = collections.deque()
        self._queued = 0
        self._paused_reading = False
        self.error: Exception | None = None  # how the stream ended (ConnectionLost, ProtocolError)
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._paused_writing = False

    # -- reading ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._large is not None:
            return memoryview(self._large)[self._large_got :]
        if self._end == len(self._scratch):  # full: move the partial frame to the front
            left = self._end - self._start
            self._scratch[:left] = self._scratch[self._start : self._end]
            self._start, self._end = 0, left
        return memoryview(self._scratch)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._large is not None:
            self._large_got += nbytes
            if self._large_got == len(self._large):
                frame, self._large = self._large, None
                self._deliver(frame)
            return
        self._end += nbytes
        self._cut()

    def _cut(self) -> None:
        """Deliver every whole frame in the scratch; start a large one in place."""
        scratch = self._scratch
        while self._end - self._start >= PREFIX.size:
            (length,) = PREFIX.unpack_from(scratch, self._start)
            if length > self.max_frame_size:
                self._fail(
                    FrameTooLarge(f"frame of {length} bytes announced; the maximum is {self.max_frame_size}")
                )
                return
            body = self._start + PREFIX.size
            have = self._end - body
            if have >= length:
                self._deliver(bytes(scratch[body : body + length]))
                self._start = body + length
                continue
            if length >= LARGE_FRAME:
                large = bytearray(length)
                large[:have] = scratch[body : self._end]
                self._large, self._large_got = large, have
                self._start = self._end = 0
            break
        if self._start == self._end:
            self._start = self._end = 0

    def _deliver(self, frame: bytes | bytearray) -> None:
        self.frames.append(frame)
        self._queued += len(frame)
        if self._queued > MAX_QUEUED_BYTES and not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake_reader()

    def taken(self, frame: bytes | bytearray) -> None:
        """``recv`` took ``frame``: reading resumes once the queue is small again."""
        self._queued -= len(frame)
        if self._paused_reading and self._queued <= MAX_QUEUED_BYTES // 2 and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        if self._large is not None or self._end != self._start:
            self._fail(ProtocolError("the stream ended inside a frame (truncated frame)"))
        else:
            self._fail(ConnectionLost("the other side closed the connection"))
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionLost(f"the connection broke: {exc}" if exc else "the connection is closed"))
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        if isinstance(error, ProtocolError) and self.transport is not None:
            self.transport.close()
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    async def readable(self) -> None:
        self._readable = asyncio.get_running_loop().create_future()
        try:
            await self._readable
        finally:
            self._readable = None

    # -- writing ----------------------------------------------------------------------

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    async def drain(self) -> None:
        while self._paused_writing and self.transport is not None and not self.transport.is_closing():
            self._writable = asyncio.get_running_loop().create_future()
            try:
                await self._writable
            finally:
                self._writable = None


class ChannelTransport:
    """A ``herder.rpc.Transport`` over a connected stream socket (a session's channel)."""

    text_payloads = False

    def __init__(self, protocol: _FrameProtocol) -> None:
        self._protocol = protocol
        self.max_frame_size = protocol.max_frame_size

    async def send(self, payload: bytes) -> None:
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise ConnectionLost("the connection is closed")
        if len(payload) > self.max_frame_size:
            raise ProtocolError(f"payload of {len(payload)} bytes exceeds the frame limit")
        prefix = PREFIX.pack(len(payload))
        if len(payload) < LARGE_FRAME:
            transport.write(prefix + payload)  # one system call for a small frame
        else:
            transport.write(prefix)
            transport.write(payload)  # as it is: no copy to join it with its prefix
        await self._protocol.drain()
        if transport.is_closing() and self._protocol.error is not None:
            raise ConnectionLost(str(self._protocol.error))

    async def recv(self) -> bytes:
        protocol = self._protocol
        while not protocol.frames:
            if protocol.error is not None:
                raise protocol.error
            await protocol.readable()
        frame = protocol.frames.popleft()
        protocol.taken(frame)
        return cast(bytes, frame)  # a bytearray for a large frame: what the codecs take as well

    async def close(self) -> None:
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.close()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)  # let connection_lost run


async def open_channel(sock: socket.socket, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> ChannelTransport:
    """The transport over ``sock``, a connected stream socket (one end of the socketpair)."""
    protocol = _FrameProtocol(max_frame_size)
    await asyncio.get_running_loop().create_connection(lambda: protocol, sock=sock)
    return ChannelTransport(protocol)


__all__ = ["ChannelTransport", "open_channel"]
