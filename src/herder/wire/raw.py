"""Reading a MessagePack envelope's head without decoding its body, sans I/O.

A relay (the agent between a client and a session's host) needs a message's ``kind``,
``id``, ``target`` and ``method`` to route it, never its ``args``, ``kwargs`` or
``result``: those may be megabytes of a file. ``peek_envelope`` walks the top-level map, decodes
the small routing fields, and notes where each other value lies in the payload, so
that ``rebuild_message`` can make the message again with a new ``id`` (or ``target``) and the
body's bytes as they came: one copy instead of a decode and an encode.

The walk only measures values (a ``bin`` of 4 MiB is skipped by its length), one
step per MessagePack item, so its cost does not grow with the bytes carried. It also
says whether a map that could be a callback (``{"$cb": ...}``, protocol §9) lies
anywhere in the body: such a message needs the peer's own decoding, and ``peek_envelope``'s
caller then takes the ordinary path.

Anything that is not a well-formed map of this shape gives ``None``, never an
exception: the ordinary decoder then reports the error as it always did.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import msgpack

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
# The MessagePack encoding of the callback key "$cb" (fixstr of 3 bytes).
_CALLBACK_KEY = b"\xa3$cb"
# The routing fields, decoded; every other value is kept as a span of the payload.
_HEAD = frozenset(("kind", "id", "target", "method"))
_KINDS = frozenset(("call", "notify", "result", "error", "cancel"))
_ARRAYS = frozenset((*range(0x90, 0xA0), 0xDC, 0xDD))
_EXTS = frozenset((0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8))
_MAX_DEPTH = 512  # containers within containers; deeper is left to the decoder's own limits
_MAX_KEYS = 16  # an envelope has at most 6; more is not one of ours to take apart
_packer = msgpack.Packer(use_bin_type=True)


@dataclass(slots=True)
class RawEnvelope:
    """A message's routing fields, and where its other values lie in the payload."""

    kind: str
    id: int | None = None
    target: str | None = None
    method: str | None = None
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (start, end)
    callbacks: bool = False  # a map keyed "$cb" lies somewhere in the body


class _Malformed(Exception):
    """The payload is not a map this module takes apart (the caller decodes it instead)."""


def _head(buf: bytes | memoryview, pos: int) -> tuple[int, int, int]:
    """The item at ``pos``: (its end if it is a scalar or a blob, else -1, children, next position).

    For an array or a map, the first value is -1 and the second the number of items
    that follow it (a map's keys and values counted apart); the third is where they begin.
    """
    if pos >= len(buf):
        raise _Malformed
    b = buf[pos]
    if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
        return pos + 1, 0, pos + 1
    if 0x80 <= b <= 0x8F:
        return -1, 2 * (b & 0x0F), pos + 1
    if 0x90 <= b <= 0x9F:
        return -1, b & 0x0F, pos + 1
    if 0xA0 <= b <= 0xBF:
        return pos + 1 + (b & 0x1F), 0, 0
    fixed = _FIXED.get(b)
    if fixed is not None:
        return pos + 1 + fixed, 0, 0
    sized = _SIZED.get(b)
    if sized is not None:
        width, extra = sized
        if pos + 1 + width > len(buf):
            raise _Malformed
        length = _read(buf, pos + 1, width)
        return pos + 1 + width + extra + length, 0, 0
    if b in (0xDC, 0xDD, 0xDE, 0xDF):
        width = 2 if b in (0xDC, 0xDE) else 4
        if pos + 1 + width > len(buf):
            raise _Malformed
        count = _read(buf, pos + 1, width)
        return -1, count * (2 if b >= 0xDE else 1), pos + 1 + width
    raise _Malformed  # 0xC1, never used


# Items of a fixed size after their first byte: floats, ints, fixext (type byte included).
_FIXED = {
    0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,
    0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,
}  # fmt: skip
# Items whose length follows their first byte: (width of the length, bytes besides the data).
_SIZED = {
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext (a type byte)
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str
}  # fmt: skip


def _read(buf: bytes | memoryview, pos: int, width: int) -> int:
    if width == 1:
        return int(buf[pos])
    if width == 2:
        return int(_U16.unpack_from(buf, pos)[0])
    return int(_U32.unpack_from(buf, pos)[0])


def _skip(buf: bytes | memoryview, pos: int) -> tuple[int, bool]:
    """The end of the item at ``pos``, and whether a map of one key ``"$cb"`` lies in it.

    Raises ``_Malformed`` where the peers' decoder (``MsgpackCodec``) would refuse the
    item, or where this walk does not vouch for it: a map key that is not a string,
    text that is not UTF-8, an extension type, nesting deeper than ``_MAX_DEPTH``.
    Iterative, one step per item, so bounded by the payload's length: every step
    moves past at least one byte.
    """
    stack: list[list[int]] = [[1, 0, 0]]  # per open container: items left, is a map, items seen
    callbacks = False
    size = len(buf)
    while stack:
        top = stack[-1]
        if top[0] == 0:
            stack.pop()
            continue
        is_key = top[1] == 1 and top[2] % 2 == 0
        top[0] -= 1
        top[2] += 1
        if pos >= size:
            raise _Malformed
        first = buf[pos]
        end, children, start = _head(buf, pos)
        if first in _EXTS:
            raise _Malformed
        text = 0xA0 <= first <= 0xBF or first in (0xD9, 0xDA, 0xDB)
        if is_key and not (text or first in (0xC4, 0xC5, 0xC6)):
            raise _Malformed  # the decoder takes only str (and bytes) keys
        if end >= 0:
            if end > size:
                raise _Malformed
            if text:
                bytes(buf[end - _text_length(buf, pos) : end]).decode()  # UnicodeDecodeError: a ValueError
            pos = end
            continue
        if len(stack) > _MAX_DEPTH:
            raise _Malformed
        if children == 2 and first not in _ARRAYS and bytes(buf[start : start + 4]) == _CALLBACK_KEY:
            callbacks = True  # a map of one entry keyed "$cb": perhaps a callback
        stack.append([children, 0 if first in _ARRAYS else 1, 0])
        pos = start
    return pos, callbacks


def _text_length(buf: bytes | memoryview, pos: int) -> int:
    first = buf[pos]
    if first <= 0xBF:
        return first & 0x1F
    return _read(buf, pos + 1, {0xD9: 1, 0xDA: 2, 0xDB: 4}[first])


def peek_envelope(payload: bytes | memoryview) -> RawEnvelope | None:
    """The envelope of a MessagePack message, without decoding its body; None if not one.

    None for anything this module does not take apart (not a map, a key that is not a
    string, a routing field of the wrong type, trailing bytes): the caller decodes the
    message the ordinary way, which reports what is wrong.
    """
    try:
        return _peek(payload)
    except (_Malformed, ValueError, struct.error, msgpack.UnpackException):
        return None


def _peek(buf: bytes | memoryview) -> RawEnvelope | None:
    end, children, pos = _head(buf, 0)
    if end >= 0 or buf[0] in _ARRAYS:  # not a map
        return None
    keys = children // 2
    if keys > _MAX_KEYS:
        return None
    head: dict[str, object] = {}
    spans: dict[str, tuple[int, int]] = {}
    callbacks = False
    for _ in range(keys):
        key_end, _, _ = _head(buf, pos)
        if key_end < 0 or key_end > len(buf):
            return None
        key = msgpack.unpackb(buf[pos:key_end])
        if not isinstance(key, str) or key in head or key in spans:
            return None
        value_end, found = _skip(buf, key_end)
        if key in _HEAD:
            head[key] = msgpack.unpackb(buf[key_end:value_end], raw=False)
        else:
            spans[key] = (key_end, value_end)
            callbacks = callbacks or found
        pos = value_end
    if pos != len(buf):
        return None
    kind, call_id, target, method = (head.get(k) for k in ("kind", "id", "target", "method"))
    if kind not in _KINDS or not isinstance(kind, str):
        return None
    if call_id is not None and type(call_id) is not int:
        return None
    if target is not None and not isinstance(target, str):
        return None
    if method is not None and not isinstance(method, str):
        return None
    return RawEnvelope(kind, call_id, target, method, spans, callbacks)


def rebuild_message(payload: bytes | memoryview, envelope: RawEnvelope, **head: object) -> bytes:
    """The message again, its routing fields replaced by ``head``, its body as it came.

    ``head`` gives the routing fields of the new message (``kind``, ``id``, ``target``,
    ``method``, in any number); a field of ``envelope`` not named there is kept.
    """
    fields: dict[str, object] = {"kind": envelope.kind}
    for key, kept in (("id", envelope.id), ("target", envelope.target), ("method", envelope.method)):
        if kept is not None:
            fields[key] = kept
    fields.update(head)
    count = len(fields) + len(envelope.spans)
    parts: list[bytes | memoryview] = [_map_header(count)]
    for key, value in fields.items():
        parts.append(_packer.pack(key))
        parts.append(_packer.pack(value))
    view = memoryview(payload)
    for key, (start, end) in envelope.spans.items():
        parts.append(_packer.pack(key))
        parts.append(view[start:end])
    return b"".join(parts)


def _map_header(count: int) -> bytes:
    if count <= 15:
        return _U8.pack(0x80 | count)
    return b"\xde" + _U16.pack(count)


__all__ = ["RawEnvelope", "peek_envelope", "rebuild_message"]
