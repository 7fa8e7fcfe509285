"""Errors of the RPC layer.

Hierarchy::

    RpcError                    base
    ├── RemoteError             the other side answered a call with an error: ``code``
    │                           (a stable wire code), ``type`` (the remote exception's
    │                           class name, for application errors), ``message``, ``data``
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
        label = f"{type}: {message}" if type else message
        super().__init__(f"[{code}] {label}")
        self.code = code
        self.type = type
        self.message = message
        self.data = data


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
