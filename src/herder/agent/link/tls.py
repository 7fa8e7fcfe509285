"""How the agent's link checks its manager over ``https://``/``wss://`` (``[manager]`` ca, fingerprint).

Three ways, chosen by the config (``ManagerLinkConfig``):

* nothing given: the system's CAs (or ``SSL_CERT_FILE``'s) and the URL's host name, as
  any HTTPS client;
* ``ca`` (``--manager-ca FILE``): only that CA, and the host name (a test fleet's CA from
  ``herder certs init``, or an organisation's own);
* ``fingerprint`` (``--manager-fingerprint sha256:HEX``): exactly the certificate with that
  SHA-256 fingerprint, whatever signed it and whatever names it carries
  (``herder.tls.pinned_context``: fetched and compared before each link is made, and
  nothing is sent to a server that does not prove it holds that certificate's key).

``client_cert``/``client_key`` are presented in each case, for a manager that asks
agents for a certificate (``--tls-client-ca`` there). The same context serves the
link's two connections: ``POST /auth/token`` (a key buys the link's token) and the
``/rpc`` WebSocket, so the key is never sent to a manager the link does not trust.
"""

from __future__ import annotations

import ssl
import urllib.parse

from herder.agent.config import ManagerLinkConfig
from herder.rpc import ConnectionLost
from herder.tls import TlsError, client_context, is_tls_url, pinned_context


class LinkTls:
    """The TLS context of each link to a manager (None: plain ``http``/``ws``).

    Made here even when nothing is set, from the system's CAs: the link's two clients
    (httpx, which would use its own bundle, and websockets) then trust the same CAs.
    """

    def __init__(self, config: ManagerLinkConfig) -> None:
        self._config = config
        self._fixed: ssl.SSLContext | None = None  # with a CA or the system's: made once

    def check(self) -> None:
        """Read the files now, so that a missing CA or key stops the agent at start.

        Raises:
            TlsError: naming the file.
        """
        cfg = self._config
        if any(is_tls_url(url) for url in cfg.urls):  # a plain link loads nothing
            self._fixed = client_context(ca=cfg.ca, cert=cfg.client_cert, key=cfg.client_key)

    async def context(self, url: str, address: str | None = None) -> ssl.SSLContext | None:
        """The context to link to ``url`` with (``address``: the address of its host to reach).

        Raises:
            ConnectionLost: a pinned manager presents another certificate (both
                fingerprints said), or cannot be reached to read it.
        """
        cfg = self._config
        if not is_tls_url(url):
            return None
        if cfg.fingerprint is None:
            if self._fixed is None:
                self.check()
            return self._fixed
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "localhost"
        try:
            return await pinned_context(
                host,
                parts.port or 443,
                cfg.fingerprint,
                cert=cfg.client_cert,
                key=cfg.client_key,
                address=address,
            )
        except TlsError as exc:
            raise ConnectionLost(str(exc)) from None
        except (OSError, TimeoutError) as exc:
            raise ConnectionLost(
                f"cannot read the certificate of {url}: {exc or type(exc).__name__}"
            ) from exc


def explain(exc: BaseException, url: str) -> str:
    """What a failed link attempt to ``url`` says: its message, and what to do about a
    certificate that was not trusted (found anywhere in the chain of causes), or a TLS
    connection closed before the manager answered (what a manager that asks for client
    certificates does to a link that has none it trusts)."""
    text = str(exc) or type(exc).__name__
    if is_tls_url(url) and "did not receive a valid HTTP response" in text:
        return f"{text} (does the manager ask for a client certificate? --tls-client-cert/--tls-client-key)"
    seen: BaseException | None = exc
    for _ in range(10):  # httpx and websockets wrap the ssl module's error a few times
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return (
                f"{text} (the manager's certificate is not trusted: {seen.verify_message}; give its CA "
                "with --manager-ca or pin it with --manager-fingerprint)"
            )
        seen = seen.__cause__ or seen.__context__
    return text
