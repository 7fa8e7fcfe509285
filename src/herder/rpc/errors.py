"""Errors of the RPC layer.

Hierarchy::

    RpcError                    base
    ├── RemoteError             the other side answered a call with an error: ``code``
    │                           (a stable wire code), ``type`` (for application errors:
    │                           the application's own code if its exception carried
    │                           one, else the exception's class name), ``message``, ``data``
    ├── InvalidParams           a call's arguments do not fit the method (raised while
    │                           serving it, before the handler runs; answered
    │                           ``invalid_params`` with the failing ``field``)
    ├── ConnectionLost          the connection ended; every call in flight fails with it
    ├── HandshakeRefused        the server refused the connection (``code`` says why)
    └── CallTimeout             a call's timeout passed (also a ``TimeoutError``); the
                                other side was told to cancel it

Lower-layer errors are translated at the boundary: a socket error or a closed
WebSocket becomes ``ConnectionLost``; a wire ``ProtocolError`` closes the connection
with its reason.
"""

from __future__ import annotations

from typing import Any


class RpcError(Exception):
    """Base of the RPC layer's errors."""


class RemoteError(RpcError):
    """A call failed on the other side."""

    def __init__(self, code: str, message: str, type: str = "", data: Any = None) -> None:
        """``type``: for ``application_error``, what the other side's exception said it
        was: its ``code`` if it carried one (a snake_case string such as ``"not_found"``,
        stable across versions), else its class name (``"ValueError"``)."""
        label = f"{type}: {message}" if type else message
        super().__init__(f"[{code}] {label}")
        self.code = code
        self.type = type
        self.message = message
        self.data = data


class InvalidParams(RpcError):
    """A call's arguments do not fit the method: answered ``invalid_params``.

    ``field`` is the path of the first argument that failed (``"running.0.1"``), or None
    when the arguments as a whole do not fit (too many, a missing one without a model).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConnectionLost(RpcError):
    """The connection is gone (closed by either side, or broken)."""


class HandshakeRefused(RpcError):
    """The server refused the connection during the handshake."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


class CallTimeout(RpcError, TimeoutError):
    """The call took longer than its timeout; it was cancelled on the other side."""
