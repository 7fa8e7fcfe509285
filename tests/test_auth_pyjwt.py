"""herder.auth on PyJWT (#13): what it keeps from before, and what PyJWT would let through alone.

``test_auth_tokens.py`` holds every refusal; these cover the seam: keys issued by the
hand-written signer still verify, PyJWT reads our tokens as standard ones, and the
cases PyJWT accepts but herder refuses (``crit: ["b64"]``, a lenient JWK ``x``, NaN).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from herder.auth import keys, tokens
from herder.auth.keys import SigningKey

NOW = 1_800_000_000.0
ISSUER = "https://manager.test"
# RFC 8037 A.1's private key: a fixed key, so a token made with it can be written down.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
# A key (kind "key", jti "k-1", role "admin") issued with that key by herder's own signer,
# before PyJWT: whatever users hold must keep verifying.
ISSUED_BEFORE_PYJWT = (
    "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6ImtQcktfcW14VldhWVZBOXd3QkY2SXVvM3ZWeno3VHhI"
    "Q1R3WEJ5Z3JTNGsifQ.eyJpc3MiOiJodHRwczovL21hbmFnZXIudGVzdCIsImF1ZCI6ImhlcmRlciIsInN1YiI6Im"
    "FsaWNlIiwiaWF0IjoxODAwMDAwMDAwLCJleHAiOjE4MDAwMDM2MDAsImp0aSI6ImstMSIsImtpbmQiOiJrZXkiLCJy"
    "b2xlIjoiYWRtaW4ifQ.pzi9jvT2u8L5eeoCBdujCVgkbIBJIPf_XxvLuUk2moE5aA3BRK0YkWYgev-zEeWS1NHJak"
    "F0ad8UYZ29MtfoAw"
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.fixture(scope="module")
def rfc_key() -> SigningKey:
    private = Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(RFC8037_D + "="))
    return SigningKey.from_private(private)


def signed(key: SigningKey, header: dict[str, Any], payload: dict[str, Any]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def test_a_key_issued_before_pyjwt_still_verifies(rfc_key: SigningKey) -> None:
    claims = tokens.verify(
        ISSUED_BEFORE_PYJWT, rfc_key.public_keys(), issuer=ISSUER, audience="herder", now=NOW
    )
    assert (claims.sub, claims.kind, claims.jti, claims.role) == ("alice", "key", "k-1", "admin")
    assert claims.kid == rfc_key.kid == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_issued_tokens_carry_the_same_payload_as_before(rfc_key: SigningKey) -> None:
    token = tokens.issue(
        rfc_key,
        {"role": "admin"},
        issuer=ISSUER,
        audience="herder",
        ttl_s=3600,
        subject="alice",
        kind="key",
        jti="k-1",
        now=NOW,
    )
    assert token.split(".")[1] == ISSUED_BEFORE_PYJWT.split(".")[1]


def test_pyjwt_alone_reads_our_tokens_as_standard_ones(rfc_key: SigningKey) -> None:
    token = tokens.issue(rfc_key, issuer=ISSUER, audience="herder", ttl_s=60, subject="bob", now=NOW)
    decoded = jwt.decode_complete(
        token,
        rfc_key.public,
        algorithms=["EdDSA"],
        audience="herder",
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert decoded["header"] == {"alg": "EdDSA", "typ": "JWT", "kid": rfc_key.kid}
    assert decoded["payload"]["sub"] == "bob"


@pytest.mark.parametrize(
    "extra",
    [{"crit": ["b64"], "b64": True}, {"crit": ["b64"], "b64": False}, {"b64": False}],
)
def test_b64_headers_pyjwt_understands_are_refused(rfc_key: SigningKey, extra: dict[str, Any]) -> None:
    payload = {"iss": ISSUER, "aud": "herder", "exp": NOW + 60}
    token = signed(rfc_key, {"alg": "EdDSA", "kid": rfc_key.kid, **extra}, payload)
    with pytest.raises(tokens.MalformedToken):
        tokens.verify(token, rfc_key.public_keys(), issuer=ISSUER, audience="herder", now=NOW)


def test_a_jwk_x_pyjwt_would_decode_leniently_is_refused() -> None:
    """The last character of a 32-byte value carries two unused bits: a twin decodes alike."""
    twin = RFC8037_X[:-1] + "p"  # "o" and "p" differ only in the unused low bit
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(RFC8037_X + "=")
    assert keys.public_keys_from_jwks({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}]})
    with pytest.raises(keys.JwksError, match="canonical"):
        keys.public_keys_from_jwks({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": twin}]})


def test_issue_refuses_claims_that_are_not_json(rfc_key: SigningKey) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        tokens.issue(
            rfc_key, {"weight": float("nan")}, issuer=ISSUER, audience="herder", ttl_s=60, subject="x"
        )
