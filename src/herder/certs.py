"""A small certificate authority for a test fleet: ``herder certs init`` and ``herder certs issue``.

TLS needs certificates before anything can be tried; a user who wants to see herder
over TLS in five minutes should not first learn ``openssl``'s options. ``init`` makes a
CA (``ca.crt``, ``ca.key``) and a server certificate signed by it (``server.crt``,
``server.key``) for the names given, loopback's always among them; ``issue`` makes
more with the same CA: a server certificate for another host, or a client certificate
(``--client``) for an agent linking to a manager that asks for one (mutual TLS).

Keys are ECDSA P-256 (small, fast handshakes, accepted by every TLS client that
matters). Files holding a private key are created ``0600`` whatever the umask, and no
file is ever overwritten: a CA made once stays the one its certificates chain to.
This is a tool for a test fleet or a LAN: a production fleet's certificates come from
the organisation's own CA, and herder takes any PEM files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_NAME = "server"
# Always in a server certificate that ``init`` makes: the names a daemon on this host
# answers to, so that the five-minute trial works on 127.0.0.1 and localhost alike.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
DEFAULT_DAYS = 825  # the longest validity browsers and Apple's clients accept for a leaf
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class CertError(Exception):
    """What ``init`` or ``issue`` refused: a file already there, no CA, a bad name."""


@dataclass(frozen=True)
class Issued:
    """The files one certificate was written to."""

    cert: Path
    key: Path


def init(directory: Path, hosts: list[str], *, days: int = DEFAULT_DAYS) -> tuple[Issued, Issued]:
    """A new CA in ``directory`` and a server certificate for ``hosts`` (and loopback).

    Returns the CA's files and the server's.

    Raises:
        CertError: ``directory`` already holds a CA or a server certificate.
    """
    for name in (CA_CERT, CA_KEY, f"{SERVER_NAME}.crt", f"{SERVER_NAME}.key"):
        if (directory / name).exists():
            raise CertError(
                f"{directory / name} exists: this directory has a CA already "
                "(herder certs issue makes more certificates with it)"
            )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"herder test CA ({directory.resolve().name})")]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a host whose clock is a little behind
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    ca = _write(directory, "ca", cert, key)
    server = issue(directory, SERVER_NAME, hosts, days=days)
    return ca, server


def issue(
    directory: Path, name: str, hosts: list[str], *, client: bool = False, days: int = DEFAULT_DAYS
) -> Issued:
    """A certificate named ``name`` signed by ``directory``'s CA, written as ``<name>.crt``
    and ``<name>.key``: for a server answering to ``hosts`` (loopback's names always added),
    or with ``client`` for a client (its subject is ``name``; ``hosts`` are added if given).

    Raises:
        CertError: no CA in ``directory``, a bad name or host, or the files exist.
    """
    if not _NAME.fullmatch(name) or name == "ca":
        raise CertError(f"{name!r} is not a certificate name: letters, digits, '.', '_' and '-' (not 'ca')")
    for suffix in (".crt", ".key"):
        if (directory / f"{name}{suffix}").exists():
            raise CertError(f"{directory / (name + suffix)} exists; choose another --name")
    ca_cert, ca_key = _load_ca(directory)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names = list(dict.fromkeys([*hosts, *([] if client else LOOPBACK_HOSTS)]))
    key = _new_key()
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
    return _write(directory, name, builder.sign(ca_key, hashes.SHA256()), key)


def _general_names(hosts: list[str]) -> list[x509.GeneralName]:
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip().strip("[]")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not re.fullmatch(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", host):
                raise CertError(f"{host!r} is neither a host name nor an IP address") from None
            names.append(x509.DNSName(host.lower()))
    return names


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertError(
            f"no CA in {directory} ({exc.filename} is missing): run herder certs init first"
        ) from None
    except ValueError as exc:
        raise CertError(f"the CA in {directory} cannot be read: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{directory / CA_KEY} is not a key herder certs made (an ECDSA key)")
    return cert, key


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    """``<name>.key`` (0600, created: never over another file), then ``<name>.crt`` (0644)."""
    from cryptography.hazmat.primitives import serialization

    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _create(key_path, pem_key, 0o600)
    _create(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Issued(cert_path, key_path)


def _create(path: Path, data: bytes, mode: int) -> None:
    """Write a new file with ``mode`` from the start (no moment when a key is readable by others)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CertError(f"{path} exists") from None
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away from a 0644
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["CA_CERT", "CA_KEY", "LOOPBACK_HOSTS", "CertError", "Issued", "init", "issue"]
