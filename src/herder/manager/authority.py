"""The manager as an authority: it issues keys and tokens, and knows which were revoked.

Auth is on when the manager's data dir holds its signing key (``herder keys init``).
Then:

* a **key** (``herder keys issue --user NAME``) is a long-lived token of kind ``key`` for
  the audience ``herder-manager``, recorded in the ``auth_keys`` table so it can be
  listed and revoked. It buys nothing by itself but **access tokens**;
* ``POST /auth/token`` with a key as bearer answers a short-lived token (kind ``token``,
  audience ``herder``, one hour by default) naming the key it was bought with (``key``):
  revoking the key ends its tokens too;
* every other route (and the agents' and services' RPC) takes only access tokens, which
  anyone holding the public key (``GET /auth/jwks.json``) can verify offline.

The revoked keys are read from the database at start and about once a second after
(``refresh``), so a revocation made by ``herder keys revoke`` (another process, or
another manager on the same PostgreSQL) takes effect within a second.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from herder.auth import keys as signing
from herder.auth import tokens
from herder.manager.store.tables import AuthKey
from herder.rpc.auth import Principal, Unauthorized

ISSUER = "herder"
KEY_AUDIENCE = "herder-manager"
TOKEN_AUDIENCE = "herder"
ROLES = ("admin", "user")
DEFAULT_KEY_TTL_S = 365 * 86400
DEFAULT_TOKEN_TTL_S = 3600


@dataclass(frozen=True)
class IssuedKey:
    key: str  # the signed key itself: give it to its holder, it is not kept
    id: str
    subject: str
    role: str
    expires_at: float


class Authority:
    """Issues and verifies with the signing key of one data dir."""

    def __init__(self, signing_key: signing.SigningKey) -> None:
        self.signing_key = signing_key
        self._public = signing_key.public_keys()
        self._revoked: frozenset[str] = frozenset()

    @classmethod
    def load(cls, data_dir: Path) -> Authority | None:
        """The authority of ``data_dir``, or None when it holds no signing key (auth off).

        Raises:
            herder.auth.AuthKeyError: a key file that cannot be used (its message says why).
        """
        key = signing.load_signing_key(data_dir)
        return cls(key) if key is not None else None

    def jwks(self) -> dict[str, Any]:
        """The public key, for verifying tokens without asking the manager."""
        return signing.jwks(self._public.values())

    # -- keys --------------------------------------------------------------------------

    async def issue_key(
        self, db: AsyncSession, subject: str, role: str, ttl_s: int = DEFAULT_KEY_TTL_S
    ) -> IssuedKey:
        """Sign a key for ``subject`` and record it (the key itself is not kept)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        now = time.time()
        key_id = secrets.token_urlsafe(16)
        key = tokens.issue(
            self.signing_key,
            {"role": role},
            issuer=ISSUER,
            audience=KEY_AUDIENCE,
            ttl_s=ttl_s,
            subject=subject,
            kind=tokens.KIND_KEY,
            jti=key_id,
            now=now,
        )
        expires_at = float(int(now) + ttl_s)
        db.add(AuthKey(id=key_id, subject=subject, role=role, issued_at=now, expires_at=expires_at))
        await db.flush()
        return IssuedKey(key, key_id, subject, role, expires_at)

    @staticmethod
    async def revoke(db: AsyncSession, *, key_id: str | None = None, subject: str | None = None) -> int:
        """Revoke one key, or every key of a user; how many were revoked now."""
        query = update(AuthKey).where(AuthKey.revoked_at.is_(None))
        if key_id is not None:
            query = query.where(AuthKey.id == key_id)
        if subject is not None:
            query = query.where(AuthKey.subject == subject)
        result = await db.execute(query.values(revoked_at=time.time()))
        return int(getattr(result, "rowcount", 0))

    @staticmethod
    async def list_keys(db: AsyncSession) -> Sequence[AuthKey]:
        return (await db.execute(select(AuthKey).order_by(AuthKey.issued_at))).scalars().all()

    async def refresh(self, db: AsyncSession) -> None:
        """Read the revoked keys again (cheap: revocations are few)."""
        rows = await db.execute(select(AuthKey.id).where(AuthKey.revoked_at.is_not(None)))
        self._revoked = frozenset(row[0] for row in rows)

    def revoked_ids(self) -> list[str]:
        """The revoked keys, for agents (a heartbeat's answer carries them)."""
        return sorted(self._revoked)

    def _is_revoked(self, key_id: str) -> bool:
        return key_id in self._revoked

    def _verify(self, token: str, audience: str, kind: str) -> tokens.Claims:
        return tokens.verify(
            token,
            self._public,
            issuer=ISSUER,
            audience=audience,
            kinds=(kind,),
            is_revoked=self._is_revoked,
        )

    # -- tokens ------------------------------------------------------------------------

    def token_for(self, key: str, ttl_s: int = DEFAULT_TOKEN_TTL_S) -> tuple[str, float]:
        """An access token bought with ``key``, and when it expires.

        Raises:
            herder.auth.TokenError: the key is not a valid, unrevoked key of this manager.
        """
        claims = self._verify(key, KEY_AUDIENCE, tokens.KIND_KEY)
        if claims.sub is None or claims.jti is None:  # issue_key sets both
            raise tokens.MissingClaim("a key must name its holder (sub) and itself (jti)")
        now = time.time()
        life_s = max(1, int(min(now + ttl_s, claims.exp) - now))  # never outlives its key
        token = tokens.issue(
            self.signing_key,
            {"role": claims.role or "user", "key": claims.jti},
            issuer=ISSUER,
            audience=TOKEN_AUDIENCE,
            ttl_s=life_s,
            subject=claims.sub,
            now=now,
        )
        return token, float(int(now) + life_s)  # issue() counts from the whole second

    def verify_token(self, token: str) -> tokens.Claims:
        """The claims of a valid access token.

        Raises:
            herder.auth.TokenError: why not (expired, revoked, signed by another key...).
        """
        claims = self._verify(token, TOKEN_AUDIENCE, tokens.KIND_TOKEN)
        bought_with = claims.raw.get("key")
        if isinstance(bought_with, str) and self._is_revoked(bought_with):
            raise tokens.Revoked(f"the key {bought_with!r} this token was bought with was revoked")
        return claims


class TokenVerifier:
    """The RPC side (``herder.rpc.auth``): a connection's token names its principal."""

    def __init__(self, authority: Authority) -> None:
        self._authority = authority

    async def verify(self, token: str) -> Principal:
        try:
            claims = self._authority.verify_token(token)
        except tokens.TokenError as exc:
            raise Unauthorized(str(exc)) from None
        return Principal(claims.sub or "", claims.role or "user")
