"""Compact JWS tokens (JWT) signed with Ed25519, and their strict verification.

Two kinds share one format: a *key* (the seed's "kite key": long-lived, issued to a
person, an agent or a service, revocable) and an access *token* (short-lived, bought
with a key). The ``kind`` claim tells them apart so that neither passes for the other.

Written here rather than taken from a JWT library because the whole point is what is
*refused*, and that is shortest to check in code that does one thing:

- The algorithm is never chosen by the token. ``alg`` must be exactly ``"EdDSA"`` and
  the signature is always checked with Ed25519, so ``alg: none`` and an HMAC token made
  with the public key as its secret are refused before any key is touched. Header
  members that would point at other keys (``jwk``, ``jku``, ``x5u``, ``x5c``) are ignored.
- The payload is decoded only after its signature has been checked.
- ``exp``, ``iss`` and ``aud`` are required, with a small leeway for clock skew.
- Anything ambiguous is malformed: a wrong number of segments, padding or foreign
  characters in base64url, non-canonical base64url, duplicate JSON members, ``crit``.

Every refusal is a ``TokenError`` with an HTTP ``status`` and a stable ``reason`` code,
so the HTTP and RPC layers answer each the same way and tests can tell them apart.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from herder.auth.keys import ALGORITHM, SigningKey, b64url_decode, b64url_encode

KIND_KEY = "key"
KIND_TOKEN = "token"
DEFAULT_LEEWAY_S = 30.0
MAX_TOKEN_LENGTH = 8192
RESERVED_CLAIMS = frozenset({"iss", "aud", "sub", "iat", "nbf", "exp", "jti", "kind"})

_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_SIGNATURE_BYTES = 64
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
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": signing_key.kid}
    signing_input = f"{_encode_json(header)}.{_encode_json(payload)}"
    signature = signing_key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"


def _encode_json(value: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8"))


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
    header_b64, payload_b64, signature_b64 = _split(token)
    kid = _check_header(header_b64)
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    signature = _decode_segment(signature_b64, "signature")
    used_kid = _check_signature(signing_input, signature, kid, public_keys)
    payload = _decode_json(payload_b64, "payload")
    claims = _claims(payload, used_kid)
    _check_claims(claims, issuer=issuer, audience=audience, kinds=kinds)
    _check_times(claims, now=time.time() if now is None else now, leeway_s=leeway_s)
    _check_revocation(claims, is_revoked)
    return claims


def _split(token: str) -> tuple[str, str, str]:
    if not isinstance(token, str) or not token:
        raise MissingToken("no token was presented")
    if len(token) > MAX_TOKEN_LENGTH:
        raise MalformedToken(
            f"the token is {len(token)} characters, more than the {MAX_TOKEN_LENGTH} allowed"
        )
    segments = token.split(".")
    if len(segments) != 3:
        raise MalformedToken(
            f"a token is three segments separated by dots (header.payload.signature), not {len(segments)}"
        )
    if not _SHAPE.fullmatch(token):
        raise MalformedToken("the token holds characters outside base64url, or an empty header or payload")
    header_b64, payload_b64, signature_b64 = segments
    return header_b64, payload_b64, signature_b64


@lru_cache(maxsize=64)
def _check_header(header_b64: str) -> str | None:
    """Check the header and return its kid. Cached: a manager's tokens share a handful of headers."""
    header = _decode_json(header_b64, "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg != ALGORITHM:
        raise BadAlgorithm(f"the token's algorithm is {_show(alg)}; only {ALGORITHM!r} (Ed25519) is accepted")
    if "crit" in header:
        raise MalformedToken(
            f"the header names critical extensions {_show(header['crit'])}, none is supported"
        )
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
        raise MalformedToken(f"the header's typ is {_show(typ)}, not 'JWT'")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise MalformedToken(f"the header's kid is {_show(kid)}, not a string")
    return kid


def _decode_segment(segment: str, what: str) -> bytes:
    try:
        return b64url_decode(segment)
    except ValueError as exc:
        raise MalformedToken(f"the token's {what} is {exc}") from None


def _decode_json(segment: str, what: str) -> dict[str, Any]:
    data = _decode_segment(segment, what)
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


# -- the signature, and its cache ------------------------------------------------------


def _check_signature(
    signing_input: bytes, signature: bytes, kid: str | None, public_keys: Mapping[str, Ed25519PublicKey]
) -> str:
    """Verify with the key the kid names, or, without a kid, with each key; return the kid used."""
    if len(signature) != _SIGNATURE_BYTES:
        raise BadSignature(f"the signature is {len(signature)} bytes, an Ed25519 signature is 64")
    if kid is not None:
        public = public_keys.get(kid)
        if public is None:
            raise UnknownKey(
                f"the token was signed by key {_show(kid)}, which is not one of this issuer's keys"
            )
        if _signature_ok(signing_input, signature, public):
            return kid
        raise BadSignature(f"the signature does not match key {_show(kid)}: the token was altered or forged")
    if not public_keys:
        raise UnknownKey("no public key is known to verify the token with")
    for candidate_kid, public in public_keys.items():
        if _signature_ok(signing_input, signature, public):
            return candidate_kid
    raise BadSignature("the token names no key and no known key verifies its signature")


class _VerifiedCache:
    """Signatures already found valid, so a client's bearer token costs one Ed25519 check per hour.

    Only successes are kept: whoever cannot sign cannot fill the cache. Entries are keyed
    by the signed bytes, the signature and the public key's raw bytes, so a hit means
    exactly what a new verification would. Bounded, least recently used first out.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, entry: tuple[bytes, bytes, bytes]) -> bool:
        with self._lock:
            if entry not in self._entries:
                return False
            self._entries.move_to_end(entry)
            return True

    def add(self, entry: tuple[bytes, bytes, bytes]) -> None:
        with self._lock:
            self._entries[entry] = None
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_verified = _VerifiedCache(size=4096)


def _signature_ok(signing_input: bytes, signature: bytes, public: Ed25519PublicKey) -> bool:
    entry = (signing_input, signature, public.public_bytes_raw())
    if entry in _verified:
        return True
    try:
        public.verify(signature, signing_input)
    except InvalidSignature:
        return False
    _verified.add(entry)
    return True


# -- the claims ------------------------------------------------------------------------


def _claims(payload: dict[str, Any], kid: str) -> Claims:
    return Claims(
        iss=_required_str(payload, "iss"),
        aud=_audience(payload),
        exp=_required_time(payload, "exp"),
        sub=_optional_str(payload, "sub"),
        iat=_optional_time(payload, "iat"),
        nbf=_optional_time(payload, "nbf"),
        jti=_optional_str(payload, "jti"),
        kind=_optional_str(payload, "kind"),
        role=_optional_str(payload, "role"),
        kid=kid,
        raw=MappingProxyType(payload),
    )


def _required_str(payload: dict[str, Any], name: str) -> str:
    value = _optional_str(payload, name)
    if value is None:
        raise MissingClaim(f"the token has no {name} claim, which is required")
    return value


def _optional_str(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, str):
        raise MalformedToken(f"the token's {name} claim is {_show(value)}, not a string")
    return value


def _audience(payload: dict[str, Any]) -> tuple[str, ...]:
    aud = payload.get("aud")
    if aud is None:
        raise MissingClaim("the token has no aud claim, which is required")
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
        return tuple(aud)
    raise MalformedToken(f"the token's aud claim is {_show(aud)}, not a string or a list of strings")


def _required_time(payload: dict[str, Any], name: str) -> float:
    value = _optional_time(payload, name)
    if value is None:
        raise MissingClaim(f"the token has no {name} claim, which is required")
    return value


def _optional_time(payload: dict[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedToken(f"the token's {name} claim is {_show(value)}, not a number of seconds")
    return value


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
