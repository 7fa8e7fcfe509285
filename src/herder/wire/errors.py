"""Errors of the wire layer.

Hierarchy::

    WireError                   base
    └── ProtocolError           the bytes or the message break the protocol
        ├── FrameTooLarge       a length prefix above the maximum frame size
        └── InvalidMessage      a frame that is not a valid envelope (bad codec data,
                                wrong types, unknown kind)

Each carries ``code``, the stable wire error code (``ErrorCode``) a peer sends back
when it answers the problem with an error message.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Stable codes carried by ``error`` messages; documented in docs/protocol.md."""

    PROTOCOL_ERROR = "protocol_error"
    FRAME_TOO_LARGE = "frame_too_large"
    INVALID_MESSAGE = "invalid_message"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNSUPPORTED_CODEC = "unsupported_codec"
    UNAUTHORIZED = "unauthorized"
    UNKNOWN_TARGET = "unknown_target"
    UNKNOWN_METHOD = "unknown_method"
    INVALID_PARAMS = "invalid_params"
    APPLICATION_ERROR = "application_error"
    INTERNAL_ERROR = "internal_error"
    CANCELLED = "cancelled"
    RELEASED_CALLBACK = "released_callback"
    OVERLOADED = "overloaded"


class WireError(Exception):
    """Base of the wire layer's errors."""

    code: ErrorCode = ErrorCode.PROTOCOL_ERROR


class ProtocolError(WireError):
    """The peer broke the protocol; the connection should be closed with this reason."""


class FrameTooLarge(ProtocolError):
    code = ErrorCode.FRAME_TOO_LARGE


class InvalidMessage(ProtocolError):
    code = ErrorCode.INVALID_MESSAGE
