"""The agent's front door: the shared one (``herder.frontdoor``) with the agent's rules.

Open on loopback is not open to the web: ``Host`` and ``Origin`` are checked even
there, and every limit of ``[limits]`` holds for every client (see ``herder.frontdoor``).
What is the agent's own:

* a request whose ``Host`` names one of its pools reached the API on a connection the
  router did not take: 421, so the client retries on a new connection;
* credentials: the agent's shared secret (``auth_token``), and, when it works for a
  manager with a key, that manager's access tokens (``Trust``); ``/healthz`` is public.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from herder import ui
from herder.frontdoor import AccessTokens, Authenticate, Door, HttpLimits, Refused, SharedSecret

if TYPE_CHECKING:
    from herder.agent.link.trust import Trust

# Paths anyone may read without a token: a liveness probe must not need a secret, and a
# browser loads the dashboard's files (herder.ui) before it has a token.
PUBLIC_PATHS = frozenset({"/healthz"}) | ui.public_paths() | ui.api_pages_public_paths()


class Guard(Door):
    """The agent's configuration of the shared ``Door``."""

    def __init__(
        self,
        app: object,
        *,
        allowed_hosts: Iterable[str],
        auth_token: str | None,
        limits: HttpLimits,
        pool_for_host: Callable[[str], str | None] | None = None,
        trust: Trust | None = None,
    ) -> None:
        super().__init__(
            app,
            limits=limits,
            hosts=allowed_hosts,
            authenticate=_credentials(auth_token, trust),
            public_paths=PUBLIC_PATHS,
            check_host=_misdirected(pool_for_host) if pool_for_host is not None else None,
        )


def _credentials(auth_token: str | None, trust: Trust | None) -> Authenticate | None:
    if trust is not None:
        return AccessTokens(
            trust.verify,
            secret=auth_token,
            ready=lambda: trust.ready,
            missing="an access token of this agent's manager is required (herder keys token)",
            unready="the agent has not reached its manager for its keys yet",
        )
    return SharedSecret(auth_token) if auth_token else None


def _misdirected(pool_for_host: Callable[[str], str | None]) -> Callable[[str], None]:
    def check(host: str) -> None:
        if pool := pool_for_host(host):
            raise Refused(
                421,
                "misdirected",
                f"Host {host!r} names pool {pool!r}, but this connection serves the agent's API; "
                "send the request on a new connection",
                "Host",
            )

    return check
