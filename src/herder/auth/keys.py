"""The manager's Ed25519 signing key pair, its key id, and the JWKS document that publishes it.

The manager signs every key and token with one private key kept in its data dir; agents
and services verify them offline with the public half, which the manager serves as a
JWKS document (RFC 7517). Ed25519 because its signatures are small, fast to verify, and
leave no parameter (curve, hash, padding) for a token or a JWKS to pick wrongly.

Files, in ``<data dir>/keys/``:

- ``signing.pem``: the private key (PKCS #8), mode 0600. It is the truth: the public key
  and the key id are derived from it every time it is loaded.
- ``public.pem``: the public key (SubjectPublicKeyInfo), a copy for operators to hand out
  out of band. Nothing here reads it back.
- ``recorded``: once a database has recorded the signing key, its key id and how many
  revoked keys the manager has seen in that database (JSON, mode 0600). A manager whose
  database does not know a key this file says was recorded has lost its database
  (emptied, or replaced by another), and one whose database holds fewer revocations than
  it has seen is on an older copy: either refuses to start unless told.

Both are written atomically (temporary file, fsync, rename or link, directory fsync), so
a crash leaves the old key or the new one, never half of either; and an existing private
key is never replaced unless the caller asks, since every key and token signed with it
would stop verifying.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from herder.durable import fsync_dir, write_file

KEYS_DIR = "keys"
PRIVATE_FILE = "signing.pem"
PUBLIC_FILE = "public.pem"
RECORDED_FILE = "recorded"
ALGORITHM = "EdDSA"
_ED25519_KEY_BYTES = 32
# 32 bytes in canonical unpadded base64url: 43 characters, the last holding 4 bits and two
# zero bits, so it is one of the 16 below. One pattern refuses padding, other alphabets,
# other lengths and the several spellings lenient decoders accept for the same key.
_ED25519_X = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


class AuthKeyError(Exception):
    """Base of the errors about keys: their files, and the JWKS documents that carry them."""


class KeysExistError(AuthKeyError):
    """``init_keys`` found a signing key already: replacing it would invalidate every key issued."""


class KeyFileError(AuthKeyError):
    """The private key file exists but cannot be used (unreadable, not Ed25519, too open)."""


class JwksError(AuthKeyError, ValueError):
    """A JWKS document, or one key in it, is not an Ed25519 public key set we accept."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The private key with what is derived from it, computed once rather than per signature."""

    private: Ed25519PrivateKey
    public: Ed25519PublicKey
    kid: str

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey) -> SigningKey:
        public = private.public_key()
        return cls(private=private, public=public, kid=key_id(public))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_private(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The ``{kid: key}`` mapping that ``tokens.verify`` takes, for this key alone."""
        return {self.kid: self.public}


# -- key id and JWK: PyJWT writes and reads the key (imported on first use, see tokens.py);
# which keys are accepted is decided here.


def key_id(public: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint: base64url SHA-256 of the key's required members.

    A kid derived from the key itself needs no registry, is the same wherever it is
    computed, and changes whenever the key does. The members are picked by name, so a
    PyJWT that wrote more of them could not change a kid.
    """
    from jwt.algorithms import OKPAlgorithm
    from jwt.utils import base64url_encode

    written = OKPAlgorithm.to_jwk(public, as_dict=True)
    members = {name: written[name] for name in ("crv", "kty", "x")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("ascii")
    return base64url_encode(hashlib.sha256(canonical).digest()).decode("ascii")


def jwk(public: Ed25519PublicKey) -> dict[str, str]:
    """One public key as a JWK (RFC 8037), with the ``alg`` and ``use`` it may serve for."""
    from jwt.algorithms import OKPAlgorithm

    written = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": written["x"],
        "kid": key_id(public),
        "alg": ALGORITHM,
        "use": "sig",
    }


def jwks(public_keys: Iterable[Ed25519PublicKey]) -> dict[str, list[dict[str, str]]]:
    """The JWKS document the manager serves; several keys allow a rotation to overlap."""
    return {"keys": [jwk(public) for public in public_keys]}


def public_keys_from_jwks(doc: Any) -> dict[str, Ed25519PublicKey]:
    """Parse a JWKS document into ``{kid: key}``, refusing anything but Ed25519 public keys.

    Each key is checked rather than skipped when it is foreign (PyJWT's ``PyJWKSet``
    skips): a set that suddenly holds an RSA or symmetric key, or private material,
    means something upstream is wrong, and saying so beats verifying against half of it.
    """
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise JwksError('a JWKS document is a JSON object with a "keys" list')
    found: dict[str, Ed25519PublicKey] = {}
    for index, entry in enumerate(doc["keys"]):
        kid, public = _public_key_from_jwk(entry, index)
        if kid in found:
            raise JwksError(f"keys[{index}]: kid {kid!r} appears twice")
        found[kid] = public
    return found


def _public_key_from_jwk(entry: Any, index: int) -> tuple[str, Ed25519PublicKey]:
    where = f"keys[{index}]"
    if not isinstance(entry, Mapping):
        raise JwksError(f"{where}: a JWK is a JSON object")
    _expect_member(entry, where, "kty", "OKP", required=True)
    _expect_member(entry, where, "crv", "Ed25519", required=True)
    _expect_member(entry, where, "alg", ALGORITHM, required=False)
    _expect_member(entry, where, "use", "sig", required=False)
    if "d" in entry:
        raise JwksError(f"{where}: holds private key material (d); a JWKS must be public keys only")
    x = entry.get("x")
    # PyJWT decodes x leniently (padding, other spellings of the same bytes): checked here.
    if not isinstance(x, str) or not _ED25519_X.fullmatch(x):
        raise JwksError(
            f"{where}: x must be an Ed25519 public key, {_ED25519_KEY_BYTES} bytes in unpadded "
            f"canonical base64url, not {x!r:.60}"
        )
    from jwt import PyJWK, PyJWTError

    try:
        public = PyJWK({"kty": "OKP", "crv": "Ed25519", "x": x}, algorithm=ALGORITHM).key
    except PyJWTError as exc:
        raise JwksError(f"{where}: {exc}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise JwksError(f"{where}: x is not an Ed25519 public key")
    kid = entry.get("kid", key_id(public))
    if not isinstance(kid, str) or not kid:
        raise JwksError(f"{where}: kid must be a non-empty string")
    return kid, public


def _expect_member(entry: Mapping[str, Any], where: str, name: str, wanted: str, *, required: bool) -> None:
    if name not in entry:
        if required:
            raise JwksError(f"{where}: {name} is missing; only {name}={wanted!r} is accepted")
        return
    if entry[name] != wanted:
        raise JwksError(f"{where}: {name}={entry[name]!r} is not accepted, only {wanted!r}")


# -- the key files ---------------------------------------------------------------------


def keys_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / KEYS_DIR


def has_keys(data_dir: str | os.PathLike[str]) -> bool:
    """Whether the data dir holds a signing key; auth is on exactly when it does."""
    return (keys_dir(data_dir) / PRIVATE_FILE).is_file()


def init_keys(data_dir: str | os.PathLike[str], *, force: bool = False) -> SigningKey:
    """Create the signing key pair in ``<data_dir>/keys/`` and return it.

    Refuses (``KeysExistError``) when a signing key is there already unless ``force``:
    a new key silently invalidates every key and token issued. The check is made again
    by the write itself (a hard link, which never replaces), so two concurrent inits
    cannot both win.
    """
    directory = keys_dir(data_dir)
    Path(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)  # 0700 whatever the umask
    directory.mkdir(exist_ok=True, mode=0o700)
    target = directory / PRIVATE_FILE
    if target.exists() and not force:
        raise KeysExistError(_exists_message(target))
    key = SigningKey.generate()
    private_pem = key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_atomically(directory, PRIVATE_FILE, private_pem, mode=0o600, replace=force)
    _write_atomically(directory, PUBLIC_FILE, public_pem, mode=0o644, replace=True)
    fsync_dir(directory)
    return key


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``recorded`` says: the key a database recorded, and the revocations seen there."""

    kid: str | None = None
    revocations: int = 0


def recorded(data_dir: str | os.PathLike[str]) -> Recorded:
    """What this data dir remembers of its database (``Recorded()``: never recorded).

    Raises:
        KeyFileError: the file is there but unreadable or not what ``mark_recorded`` writes.
    """
    path = keys_dir(data_dir) / RECORDED_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return Recorded()
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read {path}: {exc}; remove it if the database is the right one") from None
    kid, revocations = (doc.get("kid"), doc.get("revocations")) if isinstance(doc, dict) else (None, None)
    if not isinstance(kid, str) or not isinstance(revocations, int):
        raise KeyFileError(
            f"{path} is not a record of a signing key; remove it if the database is the right one"
        )
    return Recorded(kid, revocations)


def mark_recorded(data_dir: str | os.PathLike[str], kid: str, revocations: int) -> None:
    """Remember that a database recorded ``kid`` and holds ``revocations`` revoked keys."""
    if recorded(data_dir) == Recorded(kid, revocations):
        return
    directory = keys_dir(data_dir)
    doc = {"kid": kid, "revocations": revocations}
    write_file(directory, RECORDED_FILE, json.dumps(doc).encode() + b"\n")  # mkstemp: 0600
    fsync_dir(directory)


def load_signing_key(data_dir: str | os.PathLike[str]) -> SigningKey | None:
    """The signing key in the data dir, or ``None`` when there is none (auth is off).

    Like ssh with its identity files, a private key readable by group or others is
    refused rather than used: it may already be known to someone else.
    """
    path = keys_dir(data_dir) / PRIVATE_FILE
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyFileError(f"cannot read the signing key {path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise KeyFileError(
            f"the signing key {path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
            f"run `chmod 600 {path}`, or create new keys if it may have leaked"
        )
    return SigningKey.from_private(_private_key_from_pem(data, path))


def _private_key_from_pem(data: bytes, path: Path) -> Ed25519PrivateKey:
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(private).__name__}, the manager signs with Ed25519 only")
    return private


def _exists_message(target: Path) -> str:
    return (
        f"a signing key already exists at {target}; replacing it invalidates every key and token "
        "it signed. Pass force to replace it anyway"
    )


def _write_atomically(directory: Path, name: str, data: bytes, *, mode: int, replace: bool) -> None:
    """Write ``directory/name`` whole or not at all; without ``replace``, never over a file.

    The temporary file is created 0600 by ``mkstemp``, so the private key is never
    readable by others even for a moment; its final mode is set before it gets its name.
    """
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(fd, mode)
            os.fsync(fd)
        if replace:
            os.replace(tmp, directory / name)
        else:
            _link_new(tmp, directory / name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _link_new(tmp: str, target: Path) -> None:
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise KeysExistError(_exists_message(target)) from None
