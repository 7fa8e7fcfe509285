"""herder.auth: the signing key files, JWKS, and every token the verifier must refuse (#7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from herder.auth import keys, tokens
from herder.auth.keys import SigningKey
from herder.auth.tokens import Claims, TokenError

NOW = 1_800_000_000.0
ISSUER = "https://manager.test"
AUDIENCE = "herder"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64_json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def sign_raw(key: SigningKey, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """A token with exactly this header and payload, properly Ed25519-signed by ``key``."""
    signing_input = f"{b64_json(header)}.{b64_json(payload)}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def good_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": int(NOW),
        "exp": int(NOW) + 3600,
        "jti": "j1",
        "kind": "token",
    }
    payload.update(changes)
    return {name: value for name, value in payload.items() if value is not None}


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.generate()


def make(key: SigningKey, **kwargs: Any) -> str:
    arguments: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "ttl_s": 3600,
        "subject": "alice",
        "now": NOW,
    }
    arguments.update(kwargs)
    claims = arguments.pop("claims", None)
    return tokens.issue(key, claims, **arguments)


def check(token: str, key: SigningKey, **kwargs: Any) -> Claims:
    arguments: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "now": NOW}
    arguments.update(kwargs)
    public_keys = arguments.pop("public_keys", key.public_keys())
    return tokens.verify(token, public_keys, **arguments)


def refused(reason: str, token: str, key: SigningKey, **kwargs: Any) -> TokenError:
    with pytest.raises(TokenError) as caught:
        check(token, key, **kwargs)
    assert caught.value.reason == reason, str(caught.value)
    assert caught.value.status == 401
    assert str(caught.value)
    return caught.value


# -- issuing and the round trip ----------------------------------------------------------


def test_round_trip_returns_the_claims(key: SigningKey) -> None:
    token = make(key, claims={"role": "admin", "team": "ops"}, kind="key", jti="k-1")
    claims = check(token, key)
    assert claims.iss == ISSUER
    assert claims.aud == (AUDIENCE,)
    assert claims.sub == "alice"
    assert claims.iat == NOW
    assert claims.exp == NOW + 3600
    assert claims.jti == "k-1"
    assert claims.kind == "key"
    assert claims.role == "admin"
    assert claims.raw["team"] == "ops"
    assert claims.kid == key.kid
    assert claims.nbf is None


def test_header_names_eddsa_jwt_and_the_key_id(key: SigningKey) -> None:
    header = json.loads(base64.urlsafe_b64decode(make(key).split(".")[0] + "=="))
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": key.kid}


def test_jti_is_unique_by_default(key: SigningKey) -> None:
    first, second = check(make(key), key), check(make(key), key)
    assert first.jti
    assert first.jti != second.jti


def test_audience_list_matches_any_member(key: SigningKey) -> None:
    token = make(key, audience=["herder", "agents"])
    assert check(token, key, audience="agents").aud == ("herder", "agents")
    refused("wrong_audience", token, key, audience="billing")


def test_issue_refuses_registered_claims_in_extra_claims(key: SigningKey) -> None:
    for name in ("exp", "aud", "iss", "kind", "jti"):
        with pytest.raises(ValueError, match=name):
            make(key, claims={name: "x"})
    with pytest.raises(ValueError, match="ttl_s"):
        make(key, ttl_s=0)


def test_rfc8037_example_signature_verifies() -> None:
    """RFC 8037 A.4: our Ed25519 JWS signing input and signature are the standard ones.

    The example's payload is text, not a claims object, so the verifier gets past the
    signature (no bad_signature) and then refuses the payload.
    """
    d = base64.urlsafe_b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
    key = SigningKey.from_private(Ed25519PrivateKey.from_private_bytes(d))
    token = (
        "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    )
    error = refused("malformed", token, key)
    assert "payload is not JSON" in str(error)


# -- the algorithm is never the token's choice -------------------------------------------


def test_alg_none_with_empty_signature_is_refused(key: SigningKey) -> None:
    token = f"{b64_json({'alg': 'none', 'typ': 'JWT'})}.{b64_json(good_payload())}."
    error = refused("bad_algorithm", token, key)
    assert "'none'" in str(error)


@pytest.mark.parametrize("secret_kind", ["raw", "pem", "jwk_x"])
def test_hs256_made_with_the_public_key_as_secret_is_refused(key: SigningKey, secret_kind: str) -> None:
    secrets = {
        "raw": key.public.public_bytes_raw(),
        "pem": key.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk_x": keys.jwk(key.public)["x"].encode(),
    }
    signing_input = f"{b64_json({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{b64_json(good_payload())}"
    mac = hmac.new(secrets[secret_kind], signing_input.encode(), hashlib.sha256).digest()
    refused("bad_algorithm", f"{signing_input}.{b64(mac)}", key)


@pytest.mark.parametrize(
    "alg", ["HS256", "RS256", "ES256", "eddsa", "Ed25519", "EdDSA ", "", ["EdDSA"], None]
)
def test_any_other_alg_is_refused(key: SigningKey, alg: Any) -> None:
    header = {"alg": alg, "kid": key.kid} if alg is not None else {"kid": key.kid}
    refused("bad_algorithm", sign_raw(key, header, good_payload()), key)


def test_eddsa_header_over_an_hmac_signature_is_refused(key: SigningKey) -> None:
    signing_input = f"{b64_json({'alg': 'EdDSA', 'kid': key.kid})}.{b64_json(good_payload())}"
    mac = hmac.new(key.public.public_bytes_raw(), signing_input.encode(), hashlib.sha256).digest()
    refused("bad_signature", f"{signing_input}.{b64(mac)}", key)


# -- keys and signatures -----------------------------------------------------------------


def test_token_signed_by_another_key_is_refused(key: SigningKey, other_key: SigningKey) -> None:
    refused("unknown_key", make(other_key), key)


def test_another_key_claiming_our_kid_is_refused(key: SigningKey, other_key: SigningKey) -> None:
    forged = sign_raw(other_key, {"alg": "EdDSA", "kid": key.kid}, good_payload())
    refused("bad_signature", forged, key)


def test_without_kid_each_known_key_is_tried(key: SigningKey, other_key: SigningKey) -> None:
    token = sign_raw(key, {"alg": "EdDSA"}, good_payload())
    both = {**other_key.public_keys(), **key.public_keys()}
    assert check(token, key, public_keys=both).kid == key.kid
    refused("bad_signature", token, key, public_keys=other_key.public_keys())
    refused("unknown_key", token, key, public_keys={})


def test_tampered_payload_is_refused(key: SigningKey) -> None:
    header, _, signature = make(key).split(".")
    tampered = f"{header}.{b64_json(good_payload(sub='admin', role='admin'))}.{signature}"
    refused("bad_signature", tampered, key)


def test_cached_verification_does_not_outlive_a_key_change(key: SigningKey, other_key: SigningKey) -> None:
    token = make(key)
    check(token, key)
    refused("bad_signature", token, key, public_keys={key.kid: other_key.public})


# -- claims ------------------------------------------------------------------------------


def test_expiry_honours_the_leeway(key: SigningKey) -> None:
    token = make(key, ttl_s=60)
    assert check(token, key, now=NOW + 60 + 29)
    error = refused("expired", token, key, now=NOW + 60 + 30)
    assert "expired" in str(error)
    refused("expired", token, key, now=NOW + 61, leeway_s=0)


def test_not_before_is_honoured(key: SigningKey) -> None:
    token = make(key, not_before=int(NOW) + 100)
    refused("not_yet_valid", token, key)
    assert check(token, key, now=NOW + 71).nbf == NOW + 100


def test_wrong_issuer_and_audience_are_refused(key: SigningKey) -> None:
    assert "evil" in str(refused("wrong_issuer", make(key, issuer="https://evil.test"), key))
    assert "billing" in str(refused("wrong_audience", make(key, audience="billing"), key))


def test_kinds_keep_keys_and_tokens_apart(key: SigningKey) -> None:
    long_lived = make(key, kind=tokens.KIND_KEY)
    assert check(long_lived, key, kinds={tokens.KIND_KEY}).kind == "key"
    refused("wrong_kind", long_lived, key, kinds={tokens.KIND_TOKEN})
    refused("wrong_kind", sign_raw(key, {"alg": "EdDSA"}, good_payload(kind=None)), key, kinds={"token"})


@pytest.mark.parametrize("claim", ["exp", "iss", "aud"])
def test_required_claims_must_be_present(key: SigningKey, claim: str) -> None:
    token = sign_raw(key, {"alg": "EdDSA", "kid": key.kid}, good_payload(**{claim: None}))
    assert claim in str(refused("missing_claim", token, key))


@pytest.mark.parametrize(
    "changes",
    [{"exp": "tomorrow"}, {"exp": True}, {"aud": 7}, {"aud": []}, {"iss": ["a"]}, {"nbf": "x"}],
)
def test_claims_of_the_wrong_type_are_malformed(key: SigningKey, changes: dict[str, Any]) -> None:
    refused("malformed", sign_raw(key, {"alg": "EdDSA"}, good_payload(**changes)), key)


def test_revoked_jti_is_refused(key: SigningKey) -> None:
    token = make(key, jti="k-revoked")
    revoked = {"k-revoked"}
    error = refused("revoked", token, key, is_revoked=revoked.__contains__)
    assert isinstance(error, tokens.Revoked)
    assert check(make(key, jti="k-fine"), key, is_revoked=revoked.__contains__).jti == "k-fine"
    no_jti = sign_raw(key, {"alg": "EdDSA"}, good_payload(jti=None))
    refused("missing_claim", no_jti, key, is_revoked=revoked.__contains__)


# -- malformed tokens --------------------------------------------------------------------


def test_no_token_is_missing(key: SigningKey) -> None:
    refused("missing", "", key)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.rsplit(".", 1)[0],  # two segments
        lambda t: t + ".abc",  # four segments
        lambda t: t.replace(".", "..", 1),  # an empty segment
        lambda t: t[:10] + "+" + t[11:],  # standard base64, not base64url
        lambda t: t[:10] + "é" + t[11:],  # not ASCII
        lambda t: t + "=",  # padding
        lambda t: " " + t,
        lambda t: t + "A" * tokens.MAX_TOKEN_LENGTH,  # too long
    ],
)
def test_malformed_shapes_are_refused(key: SigningKey, mangle: Any) -> None:
    refused("malformed", mangle(make(key)), key)


def test_non_canonical_signature_encoding_is_refused(key: SigningKey) -> None:
    token = make(key)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    # 64 bytes take 86 characters; the last carries 4 bits and 2 unused ones.
    twin = token[:-1] + alphabet[last ^ 1]
    refused("malformed", twin, key)


@pytest.mark.parametrize(
    "header_segment",
    [
        b64(b"not json"),
        b64_json(["EdDSA"]),
        b64(b'{"alg":"none","alg":"EdDSA"}'),
        b64_json({"alg": "EdDSA", "crit": ["exp"]}),
        b64_json({"alg": "EdDSA", "typ": "at+jwt"}),
        b64_json({"alg": "EdDSA", "kid": 5}),
    ],
)
def test_malformed_headers_are_refused(key: SigningKey, header_segment: str) -> None:
    signing_input = f"{header_segment}.{b64_json(good_payload())}"
    refused("malformed", f"{signing_input}.{b64(key.sign(signing_input.encode()))}", key)


def test_duplicate_payload_members_are_refused(key: SigningKey) -> None:
    header = b64_json({"alg": "EdDSA"})
    payload = b64(b'{"iss":"https://evil.test","iss":"' + ISSUER.encode() + b'","aud":"herder","exp":2e9}')
    signing_input = f"{header}.{payload}"
    error = refused("malformed", f"{signing_input}.{b64(key.sign(signing_input.encode()))}", key)
    assert "duplicate" in str(error)


def test_errors_render_a_bearer_challenge(key: SigningKey) -> None:
    error = refused("wrong_issuer", make(key, issuer='a "quoted" \\ issuér'), key)
    header = error.www_authenticate()
    assert header.startswith('Bearer error="invalid_token", error_description="the token was issued by')
    description = header.split('error_description="', 1)[1][:-1]
    assert description.isascii()
    assert '"' not in description
    assert "\\" not in description
    assert "'quoted'" in description


# -- JWKS --------------------------------------------------------------------------------


def test_jwks_round_trip(key: SigningKey, other_key: SigningKey) -> None:
    document = json.loads(json.dumps(keys.jwks([key.public, other_key.public])))
    assert document["keys"][0] == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64(key.public.public_bytes_raw()),
        "kid": key.kid,
        "alg": "EdDSA",
        "use": "sig",
    }
    parsed = keys.public_keys_from_jwks(document)
    assert set(parsed) == {key.kid, other_key.kid}
    assert check(make(key), key, public_keys=parsed).kid == key.kid


def test_kid_is_the_rfc7638_thumbprint() -> None:
    """RFC 8037 A.3: the thumbprint of the example's Ed25519 public key."""
    document = {
        "keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]
    }
    assert list(keys.public_keys_from_jwks(document)) == ["kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kty": "RSA"}, "kty"),
        ({"kty": "oct", "k": "c2VjcmV0"}, "kty"),
        ({"crv": "X25519"}, "crv"),
        ({"crv": None}, "crv"),
        ({"alg": "HS256"}, "alg"),
        ({"use": "enc"}, "use"),
        ({"d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}, "private"),
        ({"x": "AAAA"}, "32"),
        ({"x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo="}, "base64url"),
        ({"x": None}, "x"),
        ({"kid": ""}, "kid"),
    ],
)
def test_jwks_refuses_anything_but_ed25519_public_keys(
    key: SigningKey, changes: dict[str, Any], message: str
) -> None:
    entry = {**keys.jwk(key.public), **changes}
    entry = {name: value for name, value in entry.items() if value is not None}
    with pytest.raises(keys.JwksError, match=message):
        keys.public_keys_from_jwks({"keys": [entry]})


@pytest.mark.parametrize("document", [None, [], {}, {"keys": {}}, {"keys": ["x"]}])
def test_jwks_refuses_documents_of_the_wrong_shape(document: Any) -> None:
    with pytest.raises(keys.JwksError):
        keys.public_keys_from_jwks(document)


def test_jwks_refuses_a_duplicate_kid(key: SigningKey) -> None:
    with pytest.raises(keys.JwksError, match="twice"):
        keys.public_keys_from_jwks(keys.jwks([key.public, key.public]))


# -- key files ---------------------------------------------------------------------------


def test_init_writes_private_key_0600_and_public_pem(tmp_path: Path) -> None:
    assert not keys.has_keys(tmp_path)
    assert keys.load_signing_key(tmp_path) is None
    created = keys.init_keys(tmp_path)
    directory = tmp_path / "keys"
    assert stat.S_IMODE((directory / "signing.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0
    assert keys.has_keys(tmp_path)
    public = serialization.load_pem_public_key((directory / "public.pem").read_bytes())
    assert isinstance(public, type(created.public))
    assert keys.key_id(public) == created.kid
    assert sorted(os.listdir(directory)) == ["public.pem", "signing.pem"]  # no temporary left
    loaded = keys.load_signing_key(tmp_path)
    assert loaded is not None
    assert loaded.kid == created.kid
    assert check(make(created), loaded).sub == "alice"


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    first = keys.init_keys(tmp_path)
    before = (tmp_path / "keys" / "signing.pem").read_bytes()
    with pytest.raises(keys.KeysExistError, match="already exists"):
        keys.init_keys(tmp_path)
    assert (tmp_path / "keys" / "signing.pem").read_bytes() == before
    second = keys.init_keys(tmp_path, force=True)
    assert second.kid != first.kid
    loaded = keys.load_signing_key(tmp_path)
    assert loaded is not None
    assert loaded.kid == second.kid
    assert stat.S_IMODE((tmp_path / "keys" / "signing.pem").stat().st_mode) == 0o600


def test_the_write_itself_never_replaces_an_existing_key(tmp_path: Path) -> None:
    """What makes two concurrent inits safe: the link that names the new key fails."""
    keys.init_keys(tmp_path)
    with pytest.raises(keys.KeysExistError):
        keys._write_atomically(tmp_path / "keys", "signing.pem", b"other", mode=0o600, replace=False)
    assert sorted(os.listdir(tmp_path / "keys")) == ["public.pem", "signing.pem"]


def test_load_refuses_a_key_readable_by_others(tmp_path: Path) -> None:
    keys.init_keys(tmp_path)
    path = tmp_path / "keys" / "signing.pem"
    path.chmod(0o644)
    with pytest.raises(keys.KeyFileError, match="chmod 600"):
        keys.load_signing_key(tmp_path)


def test_load_refuses_keys_that_are_not_ed25519(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    path = directory / "signing.pem"
    ec_key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    with pytest.raises(keys.KeyFileError, match="Ed25519"):
        keys.load_signing_key(tmp_path)
    path.write_bytes(b"not a key")
    with pytest.raises(keys.KeyFileError, match="PEM"):
        keys.load_signing_key(tmp_path)
