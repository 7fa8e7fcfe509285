"""The handshake that opens every connection, sans I/O.

The first frame each way is JSON whatever codec is chosen, so that any client can
start the conversation:

* the client sends ``hello``:
  ``{"protocol": "herder", "version": 1, "codecs": ["msgpack", "json"], "token": "..."}``
  (``codecs`` in order of preference; ``token`` is the bearer credential, or null);
* the server answers ``welcome``:
  ``{"protocol": "herder", "version": 1, "codec": "msgpack", "service": {...}}``
  naming the codec it picked (the first of the client's it supports) and describing
  itself; or ``{"protocol": "herder", "version": 1, "error": {"code": ..., "message": ...}}``
  and closes the connection.

From the next frame on, both sides use the chosen codec. ``version`` is the protocol's
major version: a server answers a version it does not speak with the
``unsupported_version`` error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from herder.wire.errors import ErrorCode, InvalidMessage, ProtocolError
from herder.wire.messages import CODEC_NAMES

PROTOCOL = "herder"
VERSION = 1
MAX_TOKEN_LENGTH = 16 * 1024


@dataclass(frozen=True, slots=True)
class Hello:
    codecs: tuple[str, ...] = CODEC_NAMES
    token: str | None = None
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Welcome:
    codec: str
    service: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    message: str


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _load(payload: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
        raise InvalidMessage(f"the {what} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("protocol") != PROTOCOL:
        raise ProtocolError(f'the {what} is not a herder handshake (no "protocol": "herder")')
    return doc


def encode_hello(hello: Hello) -> bytes:
    return _dump(
        {"protocol": PROTOCOL, "version": hello.version, "codecs": list(hello.codecs), "token": hello.token}
    )


def decode_hello(payload: bytes) -> Hello:
    """Parse a client's first frame.

    Raises:
        ProtocolError / InvalidMessage: not a valid hello.
    """
    doc = _load(payload, "hello")
    version, codecs, token = doc.get("version"), doc.get("codecs", ["json"]), doc.get("token")
    if type(version) is not int:
        raise InvalidMessage("hello: 'version' must be an integer")
    if not isinstance(codecs, list) or not codecs or not all(isinstance(c, str) for c in codecs):
        raise InvalidMessage("hello: 'codecs' must be a non-empty array of names")
    if token is not None and (not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH):
        raise InvalidMessage("hello: 'token' must be a string (or null)")
    return Hello(codecs=tuple(codecs), token=token, version=version)


def choose_codec(hello: Hello, supported: tuple[str, ...] = CODEC_NAMES) -> str | Refusal:
    """The codec to use, or why the connection is refused."""
    if hello.version != VERSION:
        return Refusal(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {hello.version} is not spoken here (only {VERSION})",
        )
    for name in hello.codecs:
        if name in supported:
            return name
    return Refusal(
        ErrorCode.UNSUPPORTED_CODEC, f"none of {list(hello.codecs)} is supported (only {list(supported)})"
    )


def encode_welcome(answer: Welcome | Refusal) -> bytes:
    if isinstance(answer, Refusal):
        return _dump(
            {
                "protocol": PROTOCOL,
                "version": VERSION,
                "error": {"code": str(answer.code), "message": answer.message},
            }
        )
    return _dump(
        {"protocol": PROTOCOL, "version": answer.version, "codec": answer.codec, "service": answer.service}
    )


def decode_welcome(payload: bytes) -> Welcome | Refusal:
    """Parse the server's first frame.

    Raises:
        ProtocolError / InvalidMessage: not a valid welcome.
    """
    doc = _load(payload, "welcome")
    error = doc.get("error")
    if isinstance(error, dict):
        return Refusal(str(error.get("code", ErrorCode.PROTOCOL_ERROR)), str(error.get("message", "")))
    codec, service, version = doc.get("codec"), doc.get("service", {}), doc.get("version", VERSION)
    if not isinstance(codec, str) or not isinstance(service, dict):
        raise InvalidMessage("welcome: 'codec' must be a string and 'service' a map")
    if type(version) is not int:
        raise InvalidMessage("welcome: 'version' must be an integer")
    return Welcome(codec=codec, service=service, version=version)
