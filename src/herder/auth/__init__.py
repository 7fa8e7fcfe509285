"""Authentication: the manager's signing keys, and the keys and tokens signed with them (issue #7).

``keys`` keeps the Ed25519 key pair in the manager's data dir and publishes its public
half as JWKS; ``tokens`` issues and strictly verifies the EdDSA JWTs that carry a user's
identity. Both are plain functions with no I/O beyond the key files, so the manager,
the agents and the CLI share them. PyJWT does the JWS and JWK mechanics; what is
accepted (one algorithm, required claims, clock skew, key ids, revocation) is herder's.
"""

from __future__ import annotations

from herder.auth.keys import (
    PRIVATE_FILE,
    RECORDED_FILE,
    AuthKeyError,
    JwksError,
    KeyFileError,
    KeysExistError,
    SigningKey,
    has_keys,
    init_keys,
    jwks,
    key_id,
    keys_dir,
    load_signing_key,
    mark_recorded,
    public_keys_from_jwks,
    recorded,
)
from herder.auth.shared_secret import open_secret_file, weak_secret
from herder.auth.tokens import (
    KIND_KEY,
    KIND_TOKEN,
    BadAlgorithm,
    BadSignature,
    Claims,
    Expired,
    MalformedToken,
    MissingClaim,
    MissingToken,
    NotYetValid,
    Revoked,
    TokenError,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    WrongKind,
    bearer_challenge,
    issue,
    verify,
)

__all__ = [
    "KIND_KEY",
    "KIND_TOKEN",
    "PRIVATE_FILE",
    "RECORDED_FILE",
    "AuthKeyError",
    "BadAlgorithm",
    "BadSignature",
    "Claims",
    "Expired",
    "JwksError",
    "KeyFileError",
    "KeysExistError",
    "MalformedToken",
    "MissingClaim",
    "MissingToken",
    "NotYetValid",
    "Revoked",
    "SigningKey",
    "TokenError",
    "UnknownKey",
    "WrongAudience",
    "WrongIssuer",
    "WrongKind",
    "bearer_challenge",
    "has_keys",
    "init_keys",
    "issue",
    "jwks",
    "key_id",
    "keys_dir",
    "load_signing_key",
    "mark_recorded",
    "open_secret_file",
    "public_keys_from_jwks",
    "recorded",
    "verify",
    "weak_secret",
]
