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

Keys are an **allow-list**: a key is honoured only while the database records it as
issued and not revoked, and so are the tokens bought with it. The keys are read from the
database at start and about once a second after (``refresh``), so a revocation made by
``herder keys revoke`` (another process, or another manager on the same PostgreSQL)
takes effect within a second; on PostgreSQL a revocation also sends ``NOTIFY
herder_keys`` at its commit, on which every manager reads the keys again at once
(``herder.manager.keywatch``; the re-read each second stays as the safety net). A key
issued elsewhere is looked up when it first buys a token. A database emptied, or
replaced by an older copy, therefore cannot bring back a key it does not record; and
since such a database would also have forgotten revocations, the manager refuses to
start on a database that does not know its signing key (``check_database``) unless told
to accept it as new.

An access token signed with the signing key but bought with no key (``herder up``'s
tests, an operator's script holding the private key) names no key to check; it is
accepted as before: whoever holds the private key can sign anything.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

import herder.auth as auth
from herder.manager.errors import NotIssued as NotIssued  # re-exported: its old home
from herder.manager.errors import UnknownDatabase as UnknownDatabase
from herder.manager.store.tables import AuthKey, SigningKeyRecord
from herder.rpc import Principal, Unauthorized

ISSUER = "herder"
KEY_AUDIENCE = "herder-manager"
TOKEN_AUDIENCE = "herder"
ROLES = ("admin", "user")
DEFAULT_KEY_TTL_S = 365 * 86400
DEFAULT_TOKEN_TTL_S = 3600
# PostgreSQL's channel on which a revocation is announced, delivered at its commit, so
# that every manager on the database reads the keys again at once (``keywatch``).
KEYS_CHANNEL = "herder_keys"


@dataclass(frozen=True)
class IssuedKey:
    key: str  # the signed key itself: give it to its holder, it is not kept
    id: str
    subject: str
    role: str
    expires_at: float


class Authority:
    """Issues and verifies with the signing key of one data dir."""

    def __init__(self, signing_key: auth.SigningKey, data_dir: Path | None = None) -> None:
        self.signing_key = signing_key
        self._data_dir = data_dir  # where the revocations seen are remembered (check_database)
        self._seen_revocations: int | None = None  # None until check_database bound a database
        self._public = signing_key.public_keys()
        self._revoked: frozenset[str] = frozenset()
        self._honoured: frozenset[str] = frozenset()  # issued and not revoked, per the database

    @classmethod
    def load(cls, data_dir: Path) -> Authority | None:
        """The authority of ``data_dir``, or None when it holds no signing key (auth off).

        Raises:
            herder.auth.AuthKeyError: a key file that cannot be used (its message says why).
        """
        key = auth.load_signing_key(data_dir)
        return cls(key, data_dir) if key is not None else None

    def jwks(self) -> dict[str, Any]:
        """The public key, for verifying tokens without asking the manager."""
        return auth.jwks(self._public.values())

    # -- keys --------------------------------------------------------------------------

    async def issue_key(
        self, db: AsyncSession, subject: str, role: str, ttl_s: int = DEFAULT_KEY_TTL_S
    ) -> IssuedKey:
        """Sign a key for ``subject`` and record it (the key itself is not kept)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        now = time.time()
        key_id = secrets.token_urlsafe(16)
        key = auth.issue(
            self.signing_key,
            {"role": role},
            issuer=ISSUER,
            audience=KEY_AUDIENCE,
            ttl_s=ttl_s,
            subject=subject,
            kind=auth.KIND_KEY,
            jti=key_id,
            now=now,
        )
        expires_at = float(int(now) + ttl_s)
        db.add(AuthKey(id=key_id, subject=subject, role=role, issued_at=now, expires_at=expires_at))
        await db.flush()
        self._honoured |= {key_id}  # a rolled-back issue drops out at the next refresh
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
        if db.get_bind().dialect.name == "postgresql":  # every manager reads the keys again (#17)
            await db.execute(text("SELECT pg_notify(:channel, '')"), {"channel": KEYS_CHANNEL})
        return int(getattr(result, "rowcount", 0))

    @staticmethod
    async def note_revocations(db: AsyncSession, data_dir: Path) -> None:
        """Remember, in a data dir bound to this database, how many keys it holds revoked.

        ``herder keys revoke`` calls it, so that a database later replaced by a copy from
        before the revocation is noticed even if no manager ran in between.
        """
        try:
            memory = auth.recorded(data_dir)
        except auth.KeyFileError:
            return  # the manager's start says what is wrong with it
        if memory.kid is None:
            return
        query = select(func.count()).select_from(AuthKey).where(AuthKey.revoked_at.is_not(None))
        revocations = int(await db.scalar(query) or 0)
        if revocations > memory.revocations:
            auth.mark_recorded(data_dir, memory.kid, revocations)

    @staticmethod
    async def list_keys(db: AsyncSession) -> Sequence[AuthKey]:
        return (await db.execute(select(AuthKey).order_by(AuthKey.issued_at))).scalars().all()

    async def refresh(self, db: AsyncSession) -> None:
        """Read the keys again: which are honoured, which revoked (keys are few: people,
        agents, services)."""
        rows = (await db.execute(select(AuthKey.id, AuthKey.revoked_at))).all()
        self._revoked = frozenset(key_id for key_id, revoked_at in rows if revoked_at is not None)
        self._honoured = frozenset(key_id for key_id, revoked_at in rows if revoked_at is None)
        seen = self._seen_revocations
        if seen is not None and self._data_dir is not None and len(self._revoked) > seen:
            auth.mark_recorded(self._data_dir, self.signing_key.kid, len(self._revoked))
            self._seen_revocations = len(self._revoked)

    async def check_database(self, db: AsyncSession, data_dir: Path, *, accept_new: bool = False) -> None:
        """Refuse a database that does not know this data dir's signing key, or that holds
        fewer revocations than this data dir has seen in it; then record the key.

        Known: the database recorded this key (``auth_signing_keys``). Recorded now,
        without asking: a first start (the data dir's key was never recorded anywhere and
        the database knows no key), a database made before the record existed (it knows
        no signing key but holds issued keys), or a key rotation (``keys init --force``:
        the database knows the data dir's previous key). Anything else is a database
        emptied, replaced or another manager's, where keys issued since and revocations
        are lost: ``accept_new`` takes it anyway. So it does a database that knows the key
        but holds fewer revoked keys than this data dir saw in it (keys are never deleted,
        revocations never undone): an older copy, restored from a backup, in which keys
        revoked since are valid again.

        Raises:
            UnknownDatabase: saying what was found and how to go on.
        """
        kid = self.signing_key.kid
        known = set((await db.execute(select(SigningKeyRecord.kid))).scalars())
        revoked = await db.scalar(
            select(func.count()).select_from(AuthKey).where(AuthKey.revoked_at.is_not(None))
        )
        revocations = int(revoked or 0)
        try:
            memory = auth.recorded(data_dir)
        except auth.KeyFileError as exc:
            raise UnknownDatabase(str(exc)) from None
        if kid in known:
            if memory.kid == kid and memory.revocations > revocations and not accept_new:
                where = auth.keys_dir(data_dir) / auth.RECORDED_FILE
                raise UnknownDatabase(
                    f"the database holds {revocations} revoked keys, and this data dir has seen "
                    f"{memory.revocations} revoked in it ({where}): "
                    "it is an older copy, in which keys revoked since are valid again. Restore the newest "
                    "database, or start with --accept-new-database (accept_new_database) and revoke "
                    "those keys again (herder keys ls shows them)"
                )
            self._bind(data_dir, kid, revocations)
            return
        previous = memory.kid
        fresh = previous is None and not known
        rotated = previous is not None and previous != kid and previous in known
        if not (fresh or rotated or accept_new):
            issued = await db.scalar(select(func.count()).select_from(AuthKey))
            if previous == kid:
                why = "a database recorded it before, so this one was emptied or replaced since"
            elif known:
                why = f"it records another signing key ({', '.join(sorted(known))}): it is another manager's"
            else:
                why = "the data dir's previous key is not known to it either"
            raise UnknownDatabase(
                f"the database does not know this data dir's signing key {kid} "
                f"({auth.keys_dir(data_dir) / auth.PRIVATE_FILE}): {why}. It records {issued} "
                "keys, which alone will be honoured; keys issued and revocations made since are lost. "
                "Restore the right database, or start with --accept-new-database "
                "(accept_new_database) to take this one as the manager's own"
            )
        db.add(SigningKeyRecord(kid=kid, recorded_at=time.time()))
        await db.flush()
        self._bind(data_dir, kid, revocations)

    def _bind(self, data_dir: Path, kid: str, revocations: int) -> None:
        auth.mark_recorded(data_dir, kid, revocations)
        self._data_dir = data_dir
        self._seen_revocations = revocations

    def revoked_ids(self) -> list[str]:
        """The revoked keys, for agents (a heartbeat's answer carries them)."""
        return sorted(self._revoked)

    def _is_revoked(self, key_id: str) -> bool:
        return key_id in self._revoked

    def _check_issued(self, key_id: str) -> None:
        """Raise unless the database records ``key_id`` as issued and not revoked."""
        if key_id in self._honoured:
            return
        if key_id in self._revoked:
            raise auth.Revoked(f"the key {key_id!r} was revoked")
        raise NotIssued(f"the key {key_id!r} is not one this manager's database records as issued")

    def _verify(self, token: str, audience: str, kind: str) -> auth.Claims:
        return auth.verify(
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
        claims = self._verify(key, KEY_AUDIENCE, auth.KIND_KEY)
        if claims.sub is None or claims.jti is None:  # issue_key sets both
            raise auth.MissingClaim("a key must name its holder (sub) and itself (jti)")
        self._check_issued(claims.jti)
        now = time.time()
        life_s = max(1, int(min(now + ttl_s, claims.exp) - now))  # never outlives its key
        token = auth.issue(
            self.signing_key,
            {"role": claims.role or "user", "key": claims.jti},
            issuer=ISSUER,
            audience=TOKEN_AUDIENCE,
            ttl_s=life_s,
            subject=claims.sub,
            now=now,
        )
        return token, float(int(now) + life_s)  # issue() counts from the whole second

    async def buy(self, key: str, ttl_s: int, transaction: Any) -> tuple[str, float]:
        """``token_for``, reading the keys again first when ``key`` is not known yet.

        A key issued by another process (``herder keys issue``, another manager) is in the
        database before this manager's next ``refresh``: it buys a token at once.
        ``transaction`` is ``ManagerRuntime.transaction``.

        Raises:
            herder.auth.TokenError: as ``token_for``.
        """
        try:
            return self.token_for(key, ttl_s)
        except NotIssued:
            async with transaction() as db:
                await self.refresh(db)
            return self.token_for(key, ttl_s)

    def renew(self, token: str, ttl_s: int, key: AuthKey | None) -> tuple[str, float]:
        """A fresh access token for the holder of ``token``, and when it expires.

        ``key`` is the database's record of the key ``token`` was bought with (read by the
        caller just now, so a revocation made anywhere counts at once). The new token
        names the same key, user and role, and never outlives the key.

        Raises:
            herder.auth.TokenError: ``token`` is not a valid access token, is past its
                expiry (no clock-skew leeway here: a renewal is not a grace period), or its
                key was revoked or has expired.
            NotRenewable: ``token`` was bought with no key (signed with the private key
                directly): there is no key to check it against.
        """
        claims = self.verify_token(token)
        now = time.time()
        if claims.exp <= now:
            raise auth.Expired("the token has expired: sign in with your key again")
        key_id = claims.raw.get("key")
        if key_id is None:
            raise NotRenewable("this token was bought with no key: it cannot be renewed")
        if key is None or key.id != key_id:
            raise NotIssued(f"the key {key_id!r} is not one this manager's database records as issued")
        if key.revoked_at is not None:
            raise auth.Revoked(f"the key {key_id!r} this token was bought with was revoked")
        if key.expires_at <= now:
            raise auth.Expired(f"the key {key_id!r} this token was bought with has expired")
        life_s = max(1, int(min(now + ttl_s, key.expires_at) - now))
        fresh = auth.issue(
            self.signing_key,
            {"role": key.role, "key": key.id},
            issuer=ISSUER,
            audience=TOKEN_AUDIENCE,
            ttl_s=life_s,
            subject=key.subject,
            now=now,
        )
        return fresh, float(int(now) + life_s)

    def verify_token(self, token: str) -> auth.Claims:
        """The claims of a valid access token.

        Raises:
            herder.auth.TokenError: why not (expired, revoked, signed by another key...).
        """
        claims = self._verify(token, TOKEN_AUDIENCE, auth.KIND_TOKEN)
        bought_with = claims.raw.get("key")
        if "key" in claims.raw:
            if not isinstance(bought_with, str):
                raise auth.MalformedToken("the token's key claim is not a key id")
            if self._is_revoked(bought_with):
                raise auth.Revoked(f"the key {bought_with!r} this token was bought with was revoked")
            self._check_issued(bought_with)
        return claims


class NotRenewable(Exception):
    """A valid token that cannot be renewed: it names no key (``Authority.renew``)."""


class TokenVerifier:
    """The RPC side (``herder.rpc.auth``): a connection's token names its principal."""

    def __init__(self, authority: Authority) -> None:
        self._authority = authority

    async def verify(self, token: str) -> Principal:
        try:
            claims = self._authority.verify_token(token)
        except auth.TokenError as exc:
            raise Unauthorized(str(exc)) from None
        return Principal(claims.sub or "", claims.role or "user")
