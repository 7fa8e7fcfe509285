"""Compact JWS tokens (JWT) signed with Ed25519, and herder's strict policy for accepting them.

Two kinds share one format: a *key* (the seed's "kite key": long-lived, issued to a
person, an agent or a service, revocable) and an access *token* (short-lived, bought
with a key). The ``kind`` claim tells them apart so that neither passes for the other.

PyJWT does the mechanics: it writes tokens, splits and decodes the three segments
(refusing non-canonical base64url) and checks the Ed25519 signature. What is accepted is
herder's, decided here around PyJWT's part:

- The algorithm is never chosen by the token. ``alg`` must be exactly ``"EdDSA"``, and
  PyJWT is given no other algorithm, so ``alg: none`` and an HMAC token made with the
  public key as its secret are refused before any key is touched. Header members that
  would point at other keys (``jwk``, ``jku``, ``x5u``, ``x5c``) are ignored.
- The payload is decoded only after its signature has been checked.
- ``exp``, ``iss`` and ``aud`` are required, with a small leeway for clock skew, against
  the caller's clock (PyJWT reads the wall clock, so the claims are checked here).
- Anything ambiguous is malformed: a wrong number of segments, padding or foreign
  characters in base64url, non-canonical base64url, duplicate JSON members, ``crit``.
  PyJWT lets duplicate members through (the last wins) and understands ``crit: ["b64"]``,
  so the header is read here first to refuse those.

Every refusal is a ``TokenError`` with an HTTP ``status`` and a stable ``reason`` code,
so the HTTP and RPC layers answer each the same way and tests can tell them apart.

PyJWT is imported where it is first used: the front door imports this module (for
``bearer_challenge``) on every daemon's start-up path, and PyJWT brings ``cryptography.
x509``, ``ssl`` and ``http.client`` with it, tens of milliseconds an agent need not pay.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from types import MappingProxyType
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from herder.auth.keys import ALGORITHM, SigningKey

KIND_KEY = "key"
KIND_TOKEN = "token"
DEFAULT_LEEWAY_S = 30.0
MAX_TOKEN_LENGTH = 8192
RESERVED_CLAIMS = frozenset({"iss", "aud", "sub", "iat", "nbf", "exp", "jti", "kind"})

_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_REQUIRED_CLAIMS = ("iss", "aud", "exp")
_TEXT_CLAIMS = ("iss", "sub", "jti", "kind", "role")
_TIME_CLAIMS = ("exp", "iat", "nbf")
_SHOWN_CHARS = 60
_DESCRIPTION_CHARS = {chr(code): chr(code) for code in range(0x20, 0x7F)} | {'"': "'", "\\": "/"}


# -- errors ----------------------------------------------------------------------------


class TokenError(Exception):
    """A token was refused. Every subclass means "not authenticated": HTTP 401.

    ``reason`` is a stable code for programs and logs; the message says, for a person,
    what exactly is wrong.
    """

    status: ClassVar[int] = 401
    reason: ClassVar[str] = "invalid_token"

    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` header a 401 must carry (RFC 6750 section 3)."""
        return bearer_challenge(str(self))


def bearer_challenge(description: str) -> str:
    """A ``WWW-Authenticate: Bearer`` challenge saying why a request was refused.

    The description may only hold printable ASCII without quotes or backslashes, so
    anything else in it is replaced rather than escaped.
    """
    text = "".join(_DESCRIPTION_CHARS.get(char, "?") for char in description)
    return f'Bearer error="invalid_token", error_description="{text}"'


class MissingToken(TokenError):
    reason = "missing"


class MalformedToken(TokenError):
    reason = "malformed"


class BadAlgorithm(TokenError):
    reason = "bad_algorithm"


class UnknownKey(TokenError):
    reason = "unknown_key"


class BadSignature(TokenError):
    reason = "bad_signature"


class MissingClaim(TokenError):
    reason = "missing_claim"


class WrongIssuer(TokenError):
    reason = "wrong_issuer"


class WrongAudience(TokenError):
    reason = "wrong_audience"


class WrongKind(TokenError):
    reason = "wrong_kind"


class Expired(TokenError):
    reason = "expired"


class NotYetValid(TokenError):
    reason = "not_yet_valid"


class Revoked(TokenError):
    """The token's ``jti`` is on the revocation list (checked by ``verify`` when given one)."""

    reason = "revoked"


# -- claims ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says, with the registered claims typed and the rest in ``raw``."""

    iss: str
    aud: tuple[str, ...]
    exp: float
    sub: str | None
    iat: float | None
    nbf: float | None
    jti: str | None
    kind: str | None
    role: str | None
    kid: str
    raw: Mapping[str, Any] = field(repr=False)


# -- issuing ---------------------------------------------------------------------------


class _FiniteJSON(json.JSONEncoder):
    """Refuses NaN and infinities, which are not JSON, where ``json.dumps`` would write them."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**{**options, "allow_nan": False})


def issue(
    signing_key: SigningKey,
    claims: Mapping[str, Any] | None = None,
    *,
    issuer: str,
    audience: str | Sequence[str],
    ttl_s: int,
    subject: str,
    kind: str = KIND_TOKEN,
    jti: str | None = None,
    not_before: int | None = None,
    now: float | None = None,
) -> str:
    """Sign a token. ``claims`` are extra members (``role``...), never the registered ones.

    The registered claims come only from the keyword arguments, so a caller passing a
    user's document through ``claims`` cannot have it set its own expiry or audience.
    """
    extra = dict(claims or {})
    clash = sorted(RESERVED_CLAIMS & extra.keys())
    if clash:
        raise ValueError(f"claims {clash} are set by issue()'s arguments, not in claims")
    if ttl_s < 1:
        raise ValueError(f"ttl_s must be at least 1 second, not {ttl_s}")
    issued_at = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": audience if isinstance(audience, str) else list(audience),
        "sub": subject,
        "iat": issued_at,
        "exp": issued_at + int(ttl_s),
        "jti": jti if jti is not None else secrets.token_urlsafe(16),
        "kind": kind,
        **extra,
    }
    if not_before is not None:
        payload["nbf"] = int(not_before)
    import jwt

    return jwt.encode(
        payload,
        signing_key.private,
        algorithm=ALGORITHM,
        headers={"kid": signing_key.kid},
        json_encoder=_FiniteJSON,
    )


# -- verifying -------------------------------------------------------------------------


def verify(
    token: str,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    issuer: str,
    audience: str,
    leeway_s: float = DEFAULT_LEEWAY_S,
    now: float | None = None,
    kinds: Collection[str] | None = None,
    is_revoked: Callable[[str], bool] | None = None,
) -> Claims:
    """Check ``token`` and return its claims, or raise the ``TokenError`` that says why not.

    ``public_keys`` maps key ids to the keys that may have signed it (``SigningKey.
    public_keys()``, or ``keys.public_keys_from_jwks``). ``kinds`` limits the accepted
    ``kind`` claims; ``is_revoked`` is asked about the token's ``jti`` last, once
    everything else holds, so a revocation list is only consulted for genuine tokens.
    """
    if leeway_s < 0:
        raise ValueError("leeway_s must not be negative")
    _check_shape(token)
    kid = _check_header(token.split(".", 1)[0])
    used_kid, payload = _signed_payload(token, kid, public_keys)
    claims = _claims(_parse_json(payload, "payload"), used_kid)
    _check_claims(claims, issuer=issuer, audience=audience, kinds=kinds)
    _check_times(claims, now=time.time() if now is None else now, leeway_s=leeway_s)
    _check_revocation(claims, is_revoked)
    return claims


def _check_shape(token: str) -> None:
    """Refuse what is not three base64url segments, with a message saying which way."""
    if not isinstance(token, str) or not token:
        raise MissingToken("no token was presented")
    if len(token) > MAX_TOKEN_LENGTH:
        raise MalformedToken(
            f"the token is {len(token)} characters, more than the {MAX_TOKEN_LENGTH} allowed"
        )
    segments = token.count(".") + 1
    if segments != 3:
        raise MalformedToken(
            f"a token is three segments separated by dots (header.payload.signature), not {segments}"
        )
    if not _SHAPE.fullmatch(token):
        raise MalformedToken("the token holds characters outside base64url, or an empty header or payload")


@lru_cache(maxsize=64)
def _check_header(header_b64: str) -> str | None:
    """Check the header and return its kid. Cached: a manager's tokens share a handful of headers.

    PyJWT reads the header again when it verifies; this first reading is herder's own
    because PyJWT takes the last of duplicate members and accepts ``crit: ["b64"]``, and
    so that a foreign ``alg`` is refused, with its name, before any key is looked up.
    """
    header = _parse_json(_canonical_b64(header_b64, "header"), "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg != ALGORITHM:
        raise BadAlgorithm(f"the token's algorithm is {_show(alg)}; only {ALGORITHM!r} (Ed25519) is accepted")
    if "crit" in header:
        raise MalformedToken(
            f"the header names critical extensions {_show(header['crit'])}, none is supported"
        )
    if "b64" in header:  # RFC 7797's unencoded payloads: never issued here, never read
        raise MalformedToken(f"the header's b64 member ({_show(header['b64'])}) is not supported")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
        raise MalformedToken(f"the header's typ is {_show(typ)}, not 'JWT'")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise MalformedToken(f"the header's kid is {_show(kid)}, not a string")
    return kid


def _parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedToken(f"the token's {what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedToken(f"the token's {what} is not a JSON object")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse duplicate members: parsers disagree on which one wins, and so might two verifiers."""
    result = dict(pairs)
    if len(result) != len(pairs):
        names = [name for name, _ in pairs]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"duplicate member(s) {duplicated}")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# -- the signature ---------------------------------------------------------------------


def _signed_payload(
    token: str, kid: str | None, public_keys: Mapping[str, Ed25519PublicKey]
) -> tuple[str, bytes]:
    """The kid whose key signed ``token``, and its payload: the kid's key, or without a kid each key."""
    if kid is not None:
        public = public_keys.get(kid)
        if public is None:
            raise UnknownKey(
                f"the token was signed by key {_show(kid)}, which is not one of this issuer's keys"
            )
        candidates: Mapping[str, Ed25519PublicKey] = {kid: public}
    elif public_keys:
        candidates = public_keys
    else:
        raise UnknownKey("no public key is known to verify the token with")
    for candidate_kid, candidate in candidates.items():
        try:
            return candidate_kid, _verified_payload(token, candidate.public_bytes_raw())
        except BadSignature:
            continue
    if kid is not None:
        raise BadSignature(f"the signature does not match key {_show(kid)}: the token was altered or forged")
    raise BadSignature("the token names no key and no known key verifies its signature")


@lru_cache(maxsize=4096)
def _verified_payload(token: str, public_raw: bytes) -> bytes:
    """The payload's bytes once PyJWT's EdDSA algorithm has checked the signature with this key.

    Cached, so that a client's bearer token costs one Ed25519 check per hour rather than
    one per request. A failure raises and ``lru_cache`` keeps only returns: whoever
    cannot sign cannot fill the cache. The key's raw bytes are part of the entry, so a
    hit means exactly what a new check would.

    PyJWT's ``OKPAlgorithm`` checks the signature; the segments are split and decoded
    here rather than by ``PyJWS.decode``, which reads the header a second time and checks
    the alphabet one character at a time (a fifth of an uncached verification): the shape
    was checked already (``_check_shape``), and canonical encoding is checked by encoding
    the decoded bytes again.

    Raises:
        BadSignature: this key did not sign the token (the caller may try another).
        MalformedToken: a segment is not canonical base64url.
    """
    signing_input, _, signature_b64 = token.rpartition(".")
    payload = _canonical_b64(signing_input.partition(".")[2], "payload")
    signature = _canonical_b64(signature_b64, "signature")
    public = Ed25519PublicKey.from_public_bytes(public_raw)
    if not _eddsa().verify(signing_input.encode("ascii"), public, signature):
        raise BadSignature("the signature does not match the key")
    return payload


def _canonical_b64(segment: str, what: str) -> bytes:
    """``segment`` decoded, if it is the one base64url spelling of its bytes (no padding, no spare bits)."""
    from jwt.utils import base64url_decode, base64url_encode

    try:
        data = base64url_decode(segment)
    except ValueError:
        raise MalformedToken(f"the token's {what} is not base64url") from None
    if base64url_encode(data).decode("ascii") != segment:
        raise MalformedToken(f"the token's {what} is not canonical base64url (spare bits set)")
    return data


@cache
def _eddsa() -> Any:
    """PyJWT's EdDSA algorithm: the only one a token is ever checked with, whatever its header."""
    from jwt.algorithms import OKPAlgorithm

    return OKPAlgorithm()


# -- the claims ------------------------------------------------------------------------


def _claims(payload: dict[str, Any], kid: str) -> Claims:
    """Type the claims: the required ones present, text claims strings, times finite numbers."""
    for name in _REQUIRED_CLAIMS:
        if payload.get(name) is None:
            raise MissingClaim(f"the token has no {name} claim, which is required")
    for name in _TEXT_CLAIMS:
        value = payload.get(name)
        if value is not None and not isinstance(value, str):
            raise MalformedToken(f"the token's {name} claim is {_show(value)}, not a string")
    for name in _TIME_CLAIMS:
        value = payload.get(name)
        if value is not None and not _is_seconds(value):
            raise MalformedToken(f"the token's {name} claim is {_show(value)}, not a number of seconds")
    return Claims(
        iss=payload["iss"],
        aud=_audience(payload["aud"]),
        exp=payload["exp"],
        sub=payload.get("sub"),
        iat=payload.get("iat"),
        nbf=payload.get("nbf"),
        jti=payload.get("jti"),
        kind=payload.get("kind"),
        role=payload.get("role"),
        kid=kid,
        raw=MappingProxyType(payload),
    )


def _is_seconds(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _audience(aud: Any) -> tuple[str, ...]:
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
        return tuple(aud)
    raise MalformedToken(f"the token's aud claim is {_show(aud)}, not a string or a list of strings")


def _check_claims(claims: Claims, *, issuer: str, audience: str, kinds: Collection[str] | None) -> None:
    if claims.iss != issuer:
        raise WrongIssuer(f"the token was issued by {_show(claims.iss)}, not by {issuer!r}")
    if audience not in claims.aud:
        raise WrongAudience(f"the token is for {_show(list(claims.aud))}, not for {audience!r}")
    if kinds is not None and claims.kind not in kinds:
        raise WrongKind(f"the token is a {_show(claims.kind)}, only {sorted(kinds)} is accepted here")


def _check_times(claims: Claims, *, now: float, leeway_s: float) -> None:
    if now >= claims.exp + leeway_s:
        raise Expired(f"the token expired at {_when(claims.exp)} ({now - claims.exp:.0f} s ago)")
    if claims.nbf is not None and now + leeway_s < claims.nbf:
        raise NotYetValid(f"the token is not valid before {_when(claims.nbf)} ({claims.nbf - now:.0f} s)")


def _check_revocation(claims: Claims, is_revoked: Callable[[str], bool] | None) -> None:
    if is_revoked is None:
        return
    if claims.jti is None:
        raise MissingClaim("the token has no jti claim, so it could not be revoked; it is refused")
    if is_revoked(claims.jti):
        raise Revoked(f"the token {_show(claims.jti)} has been revoked")


def _show(value: Any) -> str:
    """A value from the token, shortened for a message: the token is the sender's to make long."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[: _SHOWN_CHARS - 3]}..."


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
