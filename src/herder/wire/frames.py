"""Length-prefixed frames over a byte stream, sans I/O.

A frame is a 4-byte unsigned big-endian length ``n`` followed by ``n`` bytes of payload.
``n`` may be 0. A decoder refuses a length above its ``max_frame_size`` as soon as the
prefix is read, before buffering anything of the payload.

Message-based transports (WebSocket) carry one payload per message and no prefix.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from herder.wire.errors import FrameTooLarge, ProtocolError

PREFIX = struct.Struct(">I")
PREFIX_SIZE = PREFIX.size
# Large enough for any sensible message (a file chunk, a long listing), small enough
# that a hostile length prefix cannot make a peer allocate gigabytes.
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024


class NeedData:
    """Returned by ``FrameDecoder.next_frame`` when no whole frame is buffered yet."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


def encode_frame(payload: bytes, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """The prefix and ``payload`` as one bytes object.

    Raises:
        FrameTooLarge: ``payload`` is longer than ``max_frame_size``: sending it would
            only make the other side close the connection.
    """
    if len(payload) > max_frame_size:
        raise FrameTooLarge(f"frame of {len(payload)} bytes exceeds the maximum of {max_frame_size}")
    return PREFIX.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: ``feed()`` bytes in any chunking, take whole frames out.

    Feeding ``b""`` means the stream ended: a partial frame then raises ProtocolError
    (a truncated frame), and no frame is ever returned after EOF.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._need: int | None = None  # payload length once the prefix is read
        self._eof = False

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet part of a returned frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Add bytes read from the stream; ``b""`` marks the end of the stream.

        Raises:
            ProtocolError: data after EOF.
        """
        if self._eof:
            if data:
                raise ProtocolError("data fed after the end of the stream")
            return
        if not data:
            self._eof = True
            return
        self._buffer += data

    def next_frame(self) -> bytes | NeedData:
        """The next whole payload, or ``NEED_DATA``.

        Raises:
            FrameTooLarge: the next frame's length exceeds ``max_frame_size``.
            ProtocolError: the stream ended inside a frame.
        """
        if self._need is None:
            if len(self._buffer) < PREFIX_SIZE:
                return self._need_data()
            (length,) = PREFIX.unpack_from(self._buffer)
            if length > self.max_frame_size:
                raise FrameTooLarge(
                    f"frame of {length} bytes announced; the maximum is {self.max_frame_size}"
                )
            del self._buffer[:PREFIX_SIZE]
            self._need = length
        if len(self._buffer) < self._need:
            return self._need_data()
        with memoryview(self._buffer) as view:  # one copy (a slice first would be two)
            payload = bytes(view[: self._need])
        del self._buffer[: self._need]
        self._need = None
        return payload

    def frames(self) -> Iterator[bytes]:
        """Every whole frame buffered now."""
        while not isinstance(frame := self.next_frame(), NeedData):
            yield frame

    def _need_data(self) -> NeedData:
        if self._eof and (self._buffer or self._need is not None):
            raise ProtocolError("the stream ended inside a frame (truncated frame)")
        return NEED_DATA
