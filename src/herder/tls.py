"""TLS on herder's links: the daemons' server contexts, and how a client trusts a daemon.

One module for the agent, the manager and the agent's link to its manager, so that
what "TLS on" means is decided once:

* ``ServerTls``: the settings (``[tls]`` in a config file, ``--tls-cert``/``--tls-key``,
  ``--tls-client-ca``) and ``server_context``, the one ``ssl.SSLContext`` a daemon serves
  its port with (HTTPS and WSS on the same port; the agent's pools' own listen addresses
  too). With ``client_ca``, every client must present a certificate that CA signed:
  the handshake of one without fails, before any HTTP is read.
* ``client_context``: a client's context for ``https://``/``wss://``: a CA file, or the
  system's CAs; a client certificate for a manager that asks for one.
* ``pinned_context``: a manager named by its certificate's SHA-256 fingerprint rather
  than by a CA. The certificate is fetched in a handshake that sends nothing, its
  fingerprint compared with the pin, and the context returned trusts exactly that
  certificate (``VERIFY_X509_PARTIAL_CHAIN``: the leaf itself is the trust anchor). The
  connection made with it then fails unless the server proves it holds that
  certificate's key, so a server swapped in between the fetch and the connection gains
  nothing, and no credential is sent before the check. Names are not checked under a
  pin: the pin is the identity.

Imports nothing of herder (a shared low module). ``ssl`` itself is imported on first
use: a daemon without TLS, and every quick CLI command, need not pay for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import ssl

FINGERPRINT_PREFIX = "sha256:"
_HEX64 = re.compile(r"[0-9a-f]{64}")
# The fetch of a pinned certificate: a TCP connection and one handshake.
FETCH_TIMEOUT_S = 10.0


class TlsError(ValueError):
    """A certificate, key or CA file that cannot be used, a fingerprint that is not one,
    or a server whose certificate is not the pinned one. The message names the file or
    both fingerprints."""


class ServerTls(BaseModel):
    """A daemon's TLS: its certificate and key, and optionally the CA its clients' certificates
    must chain to (mutual TLS)."""

    model_config = ConfigDict(extra="forbid")

    cert: Path = Field(description="PEM certificate (chain) the daemon presents")
    key: Path = Field(description="PEM private key of that certificate")
    client_ca: Path | None = Field(
        None,
        description="PEM CA file: every client must present a certificate it signed (mutual TLS); "
        "a client without one cannot connect",
    )


def server_context(tls: ServerTls) -> ssl.SSLContext:
    """The context a daemon serves with: TLS 1.2 or newer, ``tls``'s certificate and key.

    Raises:
        TlsError: a file is missing or unreadable, or the key does not match the certificate.
    """
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, tls.cert, tls.key, "certificate")
    if tls.client_ca is not None:
        _load_ca(ctx, tls.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def served_with(ctx: ssl.SSLContext | None) -> Callable[[Any, Any], ssl.SSLContext] | None:
    """uvicorn's ``ssl_context_factory`` serving ``ctx`` (None without TLS): the daemon's
    one context, built and checked at start, rather than one uvicorn would build again."""
    if ctx is None:
        return None
    context = ctx
    return lambda _config, _default: context


def client_context(
    *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client's context: the server's certificate checked against ``ca`` (the system's CAs
    without one), its name against the URL's host; ``cert``/``key`` presented if given.

    Raises:
        TlsError: a file cannot be used.
    """
    import ssl

    ctx = ssl.create_default_context()
    if ca is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # only this CA, not the system's as well
        _load_ca(ctx, ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_client_cert(ctx, cert, key)
    return ctx


def parse_fingerprint(text: str) -> str:
    """``sha256:HEX`` in its one spelling (lower case, no colons), from what a user pasted:
    ``openssl x509 -fingerprint -sha256``'s ``AB:CD:...`` included.

    Raises:
        TlsError: not 64 hexadecimal digits after ``sha256:``.
    """
    value = text.strip().lower()
    if not value.startswith(FINGERPRINT_PREFIX):
        raise TlsError(f"{text!r} is not a certificate fingerprint: write it sha256:HEX")
    digits = value.removeprefix(FINGERPRINT_PREFIX).replace(":", "")
    if not _HEX64.fullmatch(digits):
        raise TlsError(f"{text!r} is not a SHA-256 fingerprint (64 hexadecimal digits after sha256:)")
    return FINGERPRINT_PREFIX + digits


def fingerprint_of(der: bytes) -> str:
    """The ``sha256:HEX`` fingerprint of a certificate in DER form."""
    return FINGERPRINT_PREFIX + hashlib.sha256(der).hexdigest()


def certificate_fingerprint(path: Path) -> str:
    """The fingerprint of the first certificate in a PEM file (what ``--manager-fingerprint`` takes).

    Raises:
        TlsError: the file holds no PEM certificate.
    """
    import ssl

    text = path.read_text()
    start = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        raise TlsError(f"{path} holds no PEM certificate")
    return fingerprint_of(ssl.PEM_cert_to_DER_cert(text[start : end + len("-----END CERTIFICATE-----")]))


async def pinned_context(
    host: str,
    port: int,
    pin: str,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    address: str | None = None,
) -> ssl.SSLContext:
    """A context that trusts only the certificate ``host:port`` presents, once its fingerprint
    is ``pin`` (see the module's docstring). ``address``: connect there (an address of
    ``host``), still naming ``host`` in the handshake.

    Raises:
        TlsError: the server's certificate is not the pinned one.
        OSError, TimeoutError: the server could not be reached or its handshake failed.
    """
    import ssl

    expected = parse_fingerprint(pin)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # read what it presents; the pin decides, below
    _load_client_cert(probe, cert, key)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(FETCH_TIMEOUT_S):
        transport, _ = await loop.create_connection(
            asyncio.Protocol, address or host, port, ssl=probe, server_hostname=host
        )
    try:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        transport.close()
    if not der:
        raise TlsError(f"{host}:{port} presented no certificate")
    found = fingerprint_of(der)
    if found != expected:
        raise TlsError(
            f"the certificate of {host}:{port} is not the pinned one: it is {found}, the pin is {expected}"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # the pin names the server, whatever name it answers to
    ctx.load_verify_locations(cadata=der)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the anchor
    _load_client_cert(ctx, cert, key)
    return ctx


def _load_ca(ctx: ssl.SSLContext, ca: Path) -> None:
    import ssl

    try:
        ctx.load_verify_locations(cafile=ca)
    except FileNotFoundError:
        raise TlsError(f"TLS: no such CA file: {ca}") from None
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"TLS: cannot read the CA file {ca}: {_reason(exc)}") from None


def _load_client_cert(ctx: ssl.SSLContext, cert: Path | None, key: Path | None) -> None:
    if cert is not None:
        _load_chain(ctx, cert, key, "client certificate")


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path | None, what: str) -> None:
    import ssl

    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise TlsError(f"TLS: no such file: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"TLS: cannot use the {what} {cert} with the key {key}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or getattr(exc, "strerror", None) or exc)


def is_tls_url(url: str) -> bool:
    """True for an ``https://`` or ``wss://`` URL."""
    return url.strip().partition("://")[0].lower() in ("https", "wss")


__all__ = [
    "FINGERPRINT_PREFIX",
    "ServerTls",
    "TlsError",
    "certificate_fingerprint",
    "client_context",
    "fingerprint_of",
    "is_tls_url",
    "parse_fingerprint",
    "pinned_context",
    "served_with",
    "server_context",
]
