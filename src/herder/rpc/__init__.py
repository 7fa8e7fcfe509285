"""RPC over the herder wire protocol: peers that call each other both ways.

from herder.rpc import Service, connect, RemoteError
"""

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
