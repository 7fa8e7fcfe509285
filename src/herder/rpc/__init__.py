"""RPC over the herder wire protocol: peers that call each other both ways.

from herder.rpc import Service, connect, RemoteError
"""

from herder.rpc.auth import Principal, SharedSecretVerifier, Unauthorized, Verifier
from herder.rpc.client import SyncPeer, connect, connect_sync, open_transport
from herder.rpc.discovery import Registration, dial, find
from herder.rpc.errors import CallTimeout, ConnectionLost, HandshakeRefused, RemoteError, RpcError
from herder.rpc.peer import Peer, RemoteCallback
from herder.rpc.service import Service
from herder.rpc.transport import StreamTransport, Transport

__all__ = [
    "CallTimeout",
    "ConnectionLost",
    "HandshakeRefused",
    "Peer",
    "Principal",
    "Registration",
    "RemoteCallback",
    "RemoteError",
    "RpcError",
    "Service",
    "SharedSecretVerifier",
    "StreamTransport",
    "SyncPeer",
    "Transport",
    "Unauthorized",
    "Verifier",
    "connect",
    "connect_sync",
    "dial",
    "find",
    "open_transport",
]
