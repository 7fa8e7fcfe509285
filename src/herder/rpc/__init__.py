"""RPC over the herder wire protocol: peers that call each other both ways.

from herder.rpc import Service, connect, RemoteError

The names below are imported on first use, not with the package: a session's host
process uses only the peer, its handlers and a transport, and should not load the
service's web stack (``service.py`` brings the front door and pydantic) before it can
answer (issue 19: half of a host's start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:
    from herder.rpc.auth import Principal, SharedSecretVerifier, Unauthorized, Verifier
    from herder.rpc.client import SyncPeer, connect, connect_sync, handshake, open_transport
    from herder.rpc.discovery import Registration, dial, endpoint_of, find
    from herder.rpc.errors import (
        CallTimeout,
        ConnectionLost,
        HandshakeRefused,
        InvalidParams,
        RemoteError,
        RpcError,
    )
    from herder.rpc.handlers import Method, Registry, validate_params
    from herder.rpc.managers import AccessToken, ManagerClient, TokenRefused
    from herder.rpc.peer import META, Peer, RemoteCallback
    from herder.rpc.service import Service
    from herder.rpc.stats import CallStats
    from herder.rpc.transport import ServerWebSocketTransport, StreamTransport, Transport

_HOMES = {
    "Principal": "auth",
    "SharedSecretVerifier": "auth",
    "Unauthorized": "auth",
    "Verifier": "auth",
    "SyncPeer": "client",
    "connect": "client",
    "connect_sync": "client",
    "handshake": "client",
    "open_transport": "client",
    "Registration": "discovery",
    "dial": "discovery",
    "endpoint_of": "discovery",
    "find": "discovery",
    "CallTimeout": "errors",
    "ConnectionLost": "errors",
    "HandshakeRefused": "errors",
    "InvalidParams": "errors",
    "RemoteError": "errors",
    "RpcError": "errors",
    "Method": "handlers",
    "Registry": "handlers",
    "validate_params": "handlers",
    "AccessToken": "managers",
    "ManagerClient": "managers",
    "TokenRefused": "managers",
    "META": "peer",
    "Peer": "peer",
    "RemoteCallback": "peer",
    "Service": "service",
    "CallStats": "stats",
    "ServerWebSocketTransport": "transport",
    "StreamTransport": "transport",
    "Transport": "transport",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = [
    "META",
    "AccessToken",
    "CallStats",
    "CallTimeout",
    "ConnectionLost",
    "HandshakeRefused",
    "InvalidParams",
    "ManagerClient",
    "Method",
    "Peer",
    "Principal",
    "Registration",
    "Registry",
    "RemoteCallback",
    "RemoteError",
    "RpcError",
    "ServerWebSocketTransport",
    "Service",
    "SharedSecretVerifier",
    "StreamTransport",
    "SyncPeer",
    "TokenRefused",
    "Transport",
    "Unauthorized",
    "Verifier",
    "connect",
    "connect_sync",
    "dial",
    "endpoint_of",
    "find",
    "handshake",
    "open_transport",
    "validate_params",
]
