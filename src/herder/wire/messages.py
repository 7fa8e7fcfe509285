"""The message envelope and its codecs, sans I/O.

After the handshake (``handshake.py``) every frame carries one message, a map encoded
with the codec chosen for the connection (JSON or MessagePack). The map's keys:

========  ===========================================  =================================
kind      ``call`` ``notify`` ``result`` ``error``     always
          ``cancel``
id        integer, 0 <= id < 2**53, chosen by the      call, result, cancel; error when
          caller, unique among its calls in flight      it answers a call (else null)
target    ``meta``, ``callback`` or a service name;    call, notify (null/absent: the
          null for the peer's default target            peer's own methods)
method    the method's name (for ``callback``: the      call, notify
          callback's id, in decimal)
args      array of positional arguments                 call, notify (default [])
kwargs    map of keyword arguments                      call, notify (default {})
result    any value                                     result
error     map: code, type, message, data               error
========  ===========================================  =================================

There is no request/response at this layer: a ``result`` or ``error`` is a message that
carries the ``id`` of a call the receiver sent. Unknown keys are ignored, so later
versions may add some.
"""

from __future__ import annotations

import enum
import json
import json.encoder
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from herder.wire.errors import ErrorCode, InvalidMessage

# The C encoder of the json module and its string encoder (UTF-8 kept, not escaped).
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_encode_basestring: Any = json.encoder.encode_basestring

MAX_ID = 2**53  # exact in every JSON implementation (IEEE doubles)
MAX_NAME_LENGTH = 256
MAX_SHOWN_LENGTH = 60  # of an invalid value quoted in an error message


class Kind(enum.StrEnum):
    CALL = "call"
    NOTIFY = "notify"
    RESULT = "result"
    ERROR = "error"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class Call:
    """Run ``method`` on ``target`` and answer with a Result or an Error carrying ``id``."""

    id: int
    method: str
    target: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notify:
    """Run ``method`` on ``target``; no answer is expected (not even an error)."""

    method: str
    target: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Result:
    """The value returned by the call ``id``."""

    id: int
    result: Any = None


@dataclass(frozen=True, slots=True)
class Error:
    """The call ``id`` failed (``id`` None: a problem not tied to one call)."""

    id: int | None
    code: str
    message: str
    type: str = ""
    data: Any = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """The caller no longer wants the answer to call ``id``: stop working on it."""

    id: int


Message = Call | Notify | Result | Error | Cancel


class Codec(Protocol):
    """Turns a message document (maps, lists, strings, numbers...) into bytes and back."""

    name: str

    def encode(self, document: Any) -> bytes: ...

    def decode(self, payload: bytes) -> Any: ...


class JsonCodec:
    """UTF-8 JSON. Byte strings cannot be sent (use MessagePack for those).

    The encoder and decoder are made once: ``json.dumps`` and ``json.loads`` with
    options build a new one per call, a fifth of the cost of a small message. So is
    the C encoder that ``JSONEncoder.encode`` builds anew at each call, when the
    interpreter has it: half the cost of encoding a small message (issue 19).
    """

    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        self._decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
        # What JSONEncoder.iterencode builds for a one-shot encode, kept: the containers
        # being encoded (its circular-reference check), then the C encoder itself.
        self._markers: dict[int, Any] = {}
        self._c_encode = (
            _c_make_encoder(
                self._markers, self._encoder.default, _encode_basestring, None, ":", ",", False, False, False
            )
            if _c_make_encoder is not None
            else None
        )

    def encode(self, document: Any) -> bytes:
        try:
            if self._c_encode is None or isinstance(document, str):
                text = self._encoder.encode(document)
            else:
                text = "".join(self._c_encode(document, 0))
        except RecursionError as exc:  # as MessagePack does: a ValueError, as encode_message says
            self._markers.clear()
            raise ValueError(f"nested too deeply for JSON: {exc}") from exc
        except BaseException:
            self._markers.clear()  # an encode cut short leaves its containers marked
            raise
        return text.encode()

    def decode(self, payload: bytes) -> Any:
        try:
            return self._decoder.decode(payload.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
            raise InvalidMessage(f"not JSON: {exc}") from exc


def _finite_float(text: str) -> float:
    """A number too large for a double (``1e400``) would become infinity: refused too."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is out of range for a 64-bit float")
    return value


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259), and ``encode`` refuses them too."""
    raise ValueError(f"{name} is not a JSON value")


class MsgpackCodec:
    """MessagePack with the bin and str types kept apart (bytes stay bytes)."""

    name = "msgpack"

    def __init__(self) -> None:
        import msgpack

        self._msgpack = msgpack
        self._packer = msgpack.Packer(use_bin_type=True)

    def encode(self, document: Any) -> bytes:
        data: bytes = self._packer.pack(document)
        return data

    def decode(self, payload: bytes) -> Any:
        try:
            return self._msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except (ValueError, TypeError, self._msgpack.UnpackException) as exc:
            raise InvalidMessage(f"not MessagePack: {exc}") from exc


def codec_for(name: str) -> Codec:
    """A codec by its name on the wire (``json`` or ``msgpack``).

    Raises:
        InvalidMessage: an unknown name.
    """
    if name == "json":
        return JsonCodec()
    if name == "msgpack":
        return MsgpackCodec()
    raise InvalidMessage(f"unknown codec {name!r}")


CODEC_NAMES = ("msgpack", "json")


def to_document(message: Message) -> dict[str, Any]:
    """The map that represents ``message`` on the wire."""
    if isinstance(message, Call):
        return {
            "kind": "call",
            "id": message.id,
            "target": message.target,
            "method": message.method,
            "args": list(message.args),
            "kwargs": dict(message.kwargs),
        }
    if isinstance(message, Notify):
        return {
            "kind": "notify",
            "target": message.target,
            "method": message.method,
            "args": list(message.args),
            "kwargs": dict(message.kwargs),
        }
    if isinstance(message, Result):
        return {"kind": "result", "id": message.id, "result": message.result}
    if isinstance(message, Error):
        error = {"code": message.code, "type": message.type, "message": message.message, "data": message.data}
        return {"kind": "error", "id": message.id, "error": error}
    return {"kind": "cancel", "id": message.id}


def encode_message(message: Message, codec: Codec) -> bytes:
    """``message`` as a frame payload.

    Raises:
        TypeError, ValueError: an argument or result the codec cannot represent.
    """
    return codec.encode(to_document(message))


def decode_message(payload: bytes, codec: Codec) -> Message:
    """The message in a frame payload.

    Raises:
        InvalidMessage: not the codec's format, or not a valid envelope (the message
            says which field is wrong).
    """
    return from_document(codec.decode(payload))


def from_document(doc: Any) -> Message:
    """Validate a decoded map and build the message.

    Raises:
        InvalidMessage: a field is missing or has the wrong type.
    """
    if not isinstance(doc, dict):
        raise InvalidMessage(f"a message must be a map, not {type(doc).__name__}")
    kind = doc.get("kind")
    if kind == "call":
        return Call(_id(doc), _name(doc, "method"), _target(doc), _args(doc), _kwargs(doc))
    if kind == "notify":
        return Notify(_name(doc, "method"), _target(doc), _args(doc), _kwargs(doc))
    if kind == "result":
        return Result(_id(doc), doc.get("result"))
    if kind == "error":
        return _error(doc)
    if kind == "cancel":
        return Cancel(_id(doc))
    raise InvalidMessage(f"unknown message kind {_show(kind)}")


def _id(doc: dict[str, Any], *, optional: bool = False) -> Any:
    value = doc.get("id")
    if value is None and optional:
        return None
    if type(value) is not int or not 0 <= value < MAX_ID:
        raise InvalidMessage(f"'id' must be an integer from 0 to 2**53-1, not {_show(value)}")
    return value


def _show(value: Any) -> str:
    """A short description of an untrusted value, for an error message.

    Containers are named by type only: ``repr`` of a deeply nested one can raise
    RecursionError, and of a huge one would fill the error sent back to the peer.
    """
    if value is None or isinstance(value, str | bytes | int | float):
        text = repr(value)
        return text if len(text) <= MAX_SHOWN_LENGTH else text[: MAX_SHOWN_LENGTH - 3] + "..."
    return f"a {type(value).__name__}"


def _name(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise InvalidMessage(f"{key!r} must be a non-empty string of at most {MAX_NAME_LENGTH} characters")
    return value


def _target(doc: dict[str, Any]) -> str | None:
    value = doc.get("target")
    if value is None:
        return None
    return _name(doc, "target")


def _args(doc: dict[str, Any]) -> list[Any]:
    value = doc.get("args", [])
    if not isinstance(value, list):
        raise InvalidMessage(f"'args' must be an array, not {type(value).__name__}")
    return value


def _kwargs(doc: dict[str, Any]) -> dict[str, Any]:
    value = doc.get("kwargs", {})
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InvalidMessage("'kwargs' must be a map with string keys")
    return value


def _error(doc: dict[str, Any]) -> Error:
    err = doc.get("error")
    if not isinstance(err, dict):
        raise InvalidMessage("'error' must be a map")
    code, message, type_ = err.get("code"), err.get("message"), err.get("type", "")
    if not isinstance(code, str) or not isinstance(message, str) or not isinstance(type_, str):
        raise InvalidMessage("'error' needs string 'code' and 'message' (and 'type', if given)")
    return Error(_id(doc, optional=True), code, message, type_, err.get("data"))


def error_for(call_id: int | None, code: ErrorCode, message: str, type_: str = "", data: Any = None) -> Error:
    """An Error message with one of the stable codes."""
    return Error(call_id, code.value, message, type_, data)
