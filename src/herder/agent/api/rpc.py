"""The agent's wire-protocol service: meta methods for sessions, and the relay to them.

Served over WebSocket at ``/rpc`` on the agent's port (behind the same front door as
the REST API: Host, Origin, token) and, with ``--protocol-port``, over TCP with the
protocol's framing. Calls targeted ``meta`` are the agent's own (``ping``, ``info`` and
``methods`` come with every peer; the agent adds the ones below). Calls to any other
target are relayed to the session it names (``sessions.SessionManager.forward``).

Credentials: with an auth token configured, a connection presents it (``Authorization``
on the WebSocket upgrade, or the hello's token) and everything needs it. Without one
the agent runs open on loopback, and every connection is the anonymous user.
"""

from __future__ import annotations

import platform
from typing import Any

from herder import __version__
from herder.agent.config import AgentConfig
from herder.agent.link.trust import Trust, TrustVerifier
from herder.agent.sessions.manager import SessionManager
from herder.rpc import META, Method, Peer, Principal, Service, SharedSecretVerifier

SERVICE_NAME = "herder-agent"
RPC_PATH = "/rpc"


def build_service(config: AgentConfig, sessions: SessionManager, trust: Trust | None = None) -> Service:
    """The agent's service, with its meta methods and the relay installed.

    ``trust``: the manager whose access tokens this agent takes (linked with a key).
    """
    token = config.auth_token
    verifier: Any = None
    if trust is not None:
        verifier = TrustVerifier(trust, token)
    elif token:
        verifier = SharedSecretVerifier(token)
    service = Service(
        SERVICE_NAME,
        __version__,
        verifier=verifier,
        anonymous=None if verifier is not None else Principal("anonymous", "admin"),
    )

    async def open_session(product: str, peer: Peer) -> dict[str, Any]:
        """Start a host process for PRODUCT; returns the session's id and resume token."""
        return await sessions.open(product, peer)

    def resume_session(session_id: str, resume_token: str, peer: Peer) -> dict[str, Any]:
        """Attach a session to this connection again; events it buffered follow."""
        return sessions.resume(session_id, resume_token, peer)

    def detach_session(session_id: str, peer: Peer) -> dict[str, Any]:
        """Leave the session running for a later resume (its idle timeout applies)."""
        return sessions.detach(session_id, peer)

    async def close_session(session_id: str, peer: Peer) -> dict[str, Any]:
        """End the session: every file closed, every process it launched stopped."""
        return await sessions.close(session_id, peer)

    def list_sessions() -> list[dict[str, Any]]:
        """Every session: id, product, state, whether a client is attached."""
        return sessions.documents()

    def agent_info() -> dict[str, Any]:
        """The agent: host name, version, sessions open, products installed."""
        from herder.products import installed_products

        return {
            "name": SERVICE_NAME,
            "version": __version__,
            "hostname": platform.node(),
            "sessions": len(sessions.sessions),
            "products": installed_products(),
        }

    for func in (open_session, resume_session, detach_session, close_session, list_sessions, agent_info):
        service.registry.add(Method.of(func), target=META)
    service.registry.forwarder = sessions.forward
    return service
