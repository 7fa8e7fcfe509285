"""What an agent linked with a key trusts: the manager's public key and its revocations.

An agent started with ``--manager URL --key-file F`` takes, on its own API, the access
tokens its manager issues (``herder keys token``): it fetches the manager's public key
(``GET /auth/jwks.json``) when it links, and learns the revoked keys from every
heartbeat's answer, so a revocation reaches it within one heartbeat. Tokens are checked
here, offline, by the same strict code as the manager's (``herder.auth.tokens``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when first used: cryptography is not on the agent's start-up path
    from herder.auth import Claims

ISSUER = "herder"
AUDIENCE = "herder"


class Trust:
    """The keys and revocations of one manager, as this agent last heard them."""

    def __init__(self) -> None:
        self._public: dict[str, Any] = {}
        self._revoked: frozenset[str] = frozenset()

    @property
    def ready(self) -> bool:
        """Whether the manager's public key is known yet (the link came up once)."""
        return bool(self._public)

    def set_jwks(self, document: Any) -> None:
        from herder.auth import public_keys_from_jwks

        self._public = public_keys_from_jwks(document)

    def set_revoked(self, key_ids: Iterable[str]) -> None:
        self._revoked = frozenset(key_ids)

    def verify(self, token: str) -> Claims:
        """The claims of a valid, unrevoked access token of the manager.

        Raises:
            herder.auth.TokenError: why not.
        """
        from herder.auth import KIND_TOKEN, Revoked, verify

        claims = verify(
            token,
            self._public,
            issuer=ISSUER,
            audience=AUDIENCE,
            kinds=(KIND_TOKEN,),
            is_revoked=self._revoked.__contains__,
        )
        bought_with = claims.raw.get("key")
        if isinstance(bought_with, str) and bought_with in self._revoked:
            raise Revoked(f"the key {bought_with!r} this token was bought with was revoked")
        return claims


class TrustVerifier:
    """The agent's RPC verifier when it trusts a manager: that manager's access tokens, or
    the agent's own shared secret if it has one."""

    def __init__(self, trust: Trust, secret: str | None) -> None:
        self._trust = trust
        self._secret = secret

    async def verify(self, token: str) -> Any:
        import hmac

        from herder.auth import TokenError
        from herder.rpc import Principal, Unauthorized

        if self._secret is not None and hmac.compare_digest(token.encode(), self._secret.encode()):
            return Principal("shared-secret", "admin")
        if not self._trust.ready:
            raise Unauthorized("the agent has not reached its manager for its keys yet")
        try:
            claims = self._trust.verify(token)
        except TokenError as exc:
            raise Unauthorized(str(exc)) from None
        return Principal(claims.sub or "", claims.role or "user")
