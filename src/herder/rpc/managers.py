"""A manager as its clients reach it: its URLs, access tokens bought with a key, retries.

    manager = ManagerClient("http://127.0.0.1:8020", key=key)
    async with connect(manager.rpc_url, token=await manager.credential()) as peer:
        ...

One copy for every client of a manager: the CLI (``herder keys token``, synchronous:
``buy_token_sync``), the agent's link (a fresh token at every connection, renewed at
``renew_at``), and discovery (``find``, ``dial``, ``Registration``), which keep a bought
token until most of its life has passed.

A key (``herder keys issue``) is never sent anywhere but ``POST /auth/token``; what goes
on the wire afterwards is the short-lived access token it bought. Buying is retried with
backoff when the manager cannot be reached or answers 5xx (it may be restarting); a 401
(the key is revoked, expired or not this manager's) or a 404 (auth is off there, or the
URL is not a manager) is final and raised at once, as ``TokenRefused`` naming the cause.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herder.net import base_url, rpc_url
from herder.rpc.errors import ConnectionLost, HandshakeRefused

if TYPE_CHECKING:
    import ssl

    import httpx

TOKEN_PATH = "/auth/token"
JWKS_PATH = "/auth/jwks.json"
REQUEST_TIMEOUT_S = 30.0
# Three tries, 0.2 s then 0.4 s apart: enough to ride out a manager's restart on the
# same host, short enough that a caller with its own backoff (the agent's link) is not
# held up for long.
ATTEMPTS = 3
BACKOFF_INITIAL_S = 0.2
# A token is used until this fraction of its life has passed, then a new one is bought:
# a link or a call never runs on a token about to expire.
RENEW_AT_FRACTION = 0.8
# A token said to live less than this is still kept this long (a clock skew must not
# make a client buy a token per call).
MIN_LIFE_S = 1.0


@dataclass(frozen=True)
class AccessToken:
    """An access token the manager sold for a key; times are Unix seconds."""

    token: str
    expires_at: float
    renew_at: float


class TokenRefused(HandshakeRefused):
    """The manager answered ``POST /auth/token`` with an error: the key buys nothing there.

    ``status`` is the HTTP status, ``code`` the manager's error code (``revoked``,
    ``expired``, ``not_found``...) or the status as text, ``detail`` the manager's own
    message.
    """

    def __init__(self, base: str, status: int, code: str, detail: str) -> None:
        if status == 401:
            why = f"the manager at {base} refused the key (HTTP 401): {detail}"
        elif status == 404:
            why = f"{base} has no auth (HTTP 404: auth is off, or it is not a herder manager): {detail}"
        else:
            why = f"the manager at {base} could not sell a token (HTTP {status}): {detail}"
        super().__init__(code, why)
        self.status = status
        self.detail = detail


class ManagerClient:
    """One manager's addresses and the credential to present to it.

    ``url``: the manager's ``http(s)://host:port`` or its ``ws(s)://.../rpc``. ``key``: a key
    it issued, which buys access tokens; ``token``: a token (or shared secret) presented as
    is. With neither, ``credential()`` is None (a manager without auth).
    """

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        token: str | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
        attempts: int = ATTEMPTS,
        backoff_s: float = BACKOFF_INITIAL_S,
        clock: Callable[[], float] = time.time,
        address: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``address``: connect to this address of the URL's host name rather than the
        resolver's first (the agent's link picks one of a name's several addresses); the
        requests still name the host (``Host``, TLS's server name)."""
        self.base_url = base_url(url)
        self._address = address
        self._tls = tls  # an https manager's check (herder.tls); None: the system's CAs
        self.rpc_url = rpc_url(url)
        self._key = key
        self._token = token
        self._timeout_s = timeout_s
        self._attempts = max(1, attempts)
        self._backoff_s = backoff_s
        self._clock = clock
        self._bought: AccessToken | None = None
        self._buying = asyncio.Lock()

    # -- the credential --------------------------------------------------------------------

    async def credential(self) -> str | None:
        """The token to present: with a key, the last one bought until its ``renew_at``
        (then a new one); else the ``token`` given, or None.

        Raises:
            TokenRefused: the manager sells no token for the key (401, 404, 5xx at last).
            ConnectionLost: the manager could not be reached, even after retries.
        """
        if self._key is None:
            return self._token
        async with self._buying:  # callers at once share one purchase
            bought = self._bought
            if bought is None or self._clock() >= bought.renew_at:
                bought = await self.buy_token()
            return bought.token

    def forget_token(self) -> None:
        """Drop the token kept: the next ``credential()`` buys one (after a refusal with it)."""
        self._bought = None

    async def buy_token(self) -> AccessToken:
        """A fresh access token for the key (kept for ``credential()``).

        Raises:
            ValueError: this client has no key.
            TokenRefused, ConnectionLost: as ``credential()``.
        """
        return self._bought_from(await self._send("POST", TOKEN_PATH, self._key_header()))

    def buy_token_sync(self) -> AccessToken:
        """``buy_token`` for synchronous callers (the CLI), with the same retries and errors."""
        return self._bought_from(self._send_sync("POST", TOKEN_PATH, self._key_header()))

    async def jwks(self) -> dict[str, Any]:
        """The manager's public signing keys (``GET /auth/jwks.json``), to verify its tokens.

        Raises:
            TokenRefused: the manager has no signing key (404: auth is off) or failed.
            ConnectionLost: the manager could not be reached, even after retries.
        """
        document: dict[str, Any] = self._json_of(await self._send("GET", JWKS_PATH))
        return document

    # -- one request, tried again while the manager is away ---------------------------------

    async def _send(self, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """The manager's answer; a 5xx only once every attempt got one.

        Raises:
            ConnectionLost: no attempt reached the manager.
        """
        import httpx

        url, headers, extensions = self._aimed(path, headers)
        async with httpx.AsyncClient(timeout=self._timeout_s, **self._verify()) as client:
            for attempt in range(1, self._attempts + 1):
                try:
                    answer = await client.request(method, url, headers=headers, extensions=extensions)
                except httpx.TransportError as exc:
                    if attempt == self._attempts:
                        raise self._unreachable(exc) from exc
                else:
                    if answer.status_code < 500 or attempt == self._attempts:
                        return answer
                await asyncio.sleep(self._delay(attempt))
        raise AssertionError("unreachable")

    def _send_sync(self, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """``_send`` for synchronous callers."""
        import httpx

        url, headers, extensions = self._aimed(path, headers)
        with httpx.Client(timeout=self._timeout_s, **self._verify()) as client:
            for attempt in range(1, self._attempts + 1):
                try:
                    answer = client.request(method, url, headers=headers, extensions=extensions)
                except httpx.TransportError as exc:
                    if attempt == self._attempts:
                        raise self._unreachable(exc) from exc
                else:
                    if answer.status_code < 500 or attempt == self._attempts:
                        return answer
                time.sleep(self._delay(attempt))
        raise AssertionError("unreachable")

    # -- the pieces both entries share -------------------------------------------------------

    def _aimed(
        self, path: str, headers: dict[str, str] | None
    ) -> tuple[str, dict[str, str] | None, dict[str, Any] | None]:
        """The request's URL, headers and extensions: to ``address`` if one was given."""
        if self._address is None:
            return self.base_url + path, headers, None
        parts = urllib.parse.urlsplit(self.base_url)
        host = f"[{self._address}]" if ":" in self._address else self._address
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc)) + path
        return url, {**(headers or {}), "Host": parts.netloc}, {"sni_hostname": parts.hostname}

    def _verify(self) -> dict[str, Any]:
        return {} if self._tls is None else {"verify": self._tls}

    def _key_header(self) -> dict[str, str]:
        if self._key is None:
            raise ValueError("this ManagerClient has no key to buy a token with")
        return {"Authorization": f"Bearer {self._key}"}

    def _delay(self, attempt: int) -> float:
        return float(self._backoff_s * 2 ** (attempt - 1))

    def _unreachable(self, exc: Exception) -> ConnectionLost:
        return ConnectionLost(f"cannot reach the manager at {self.base_url}: {exc or type(exc).__name__}")

    def _json_of(self, answer: httpx.Response) -> Any:
        """The body of a 200 answer; any other answer raised as ``TokenRefused``."""
        try:
            document = answer.json()
        except ValueError:
            document = None
        if answer.status_code != 200 or not isinstance(document, dict):
            code, detail = str(answer.status_code), answer.text[:200]
            if isinstance(document, dict):
                code = str(document.get("error") or code)
                detail = str(document.get("message") or detail)
            raise TokenRefused(self.base_url, answer.status_code, code, detail)
        return document

    def _bought_from(self, answer: httpx.Response) -> AccessToken:
        document = self._json_of(answer)
        try:
            token, expires_at = str(document["token"]), float(document["expires_at"])
        except (KeyError, TypeError, ValueError):
            raise TokenRefused(self.base_url, answer.status_code, "bad_answer", answer.text[:200]) from None
        now = self._clock()
        life = max(MIN_LIFE_S, expires_at - now)
        self._bought = AccessToken(token, expires_at, now + RENEW_AT_FRACTION * life)
        return self._bought
