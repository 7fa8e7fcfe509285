"""Who is calling: credentials presented when a connection opens, checked by a verifier.

The client puts a bearer token in its hello (or, over a WebSocket, in the
``Authorization`` header). The service's verifier turns it into a principal (any
object naming who called), or refuses it. Methods need a principal unless they are
registered with ``auth=False``. Signed tokens (EdDSA JWTs) arrive with the registry;
for now a shared secret is what ships.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Protocol


class Unauthorized(Exception):
    """The credentials presented are not valid (the connection is refused)."""


class Verifier(Protocol):
    """Checks a bearer token; returns the caller's principal."""

    async def verify(self, token: str) -> Any:
        """The principal for ``token``.

        Raises:
            Unauthorized: the token is not valid.
        """
        ...


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a name and a role."""

    name: str
    role: str = "user"


class SharedSecretVerifier:
    """Accepts exactly one secret, compared in constant time."""

    def __init__(self, secret: str, principal: Principal | None = None) -> None:
        if not secret:
            raise ValueError("the shared secret must not be empty")
        self._secret = secret.encode()
        self._principal = principal or Principal("shared-secret", "admin")

    async def verify(self, token: str) -> Principal:
        if not hmac.compare_digest(token.encode(), self._secret):
            raise Unauthorized("the token does not match the shared secret")
        return self._principal
