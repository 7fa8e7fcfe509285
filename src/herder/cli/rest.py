"""The CLI's HTTP client: the standard library's ``http.client``, one connection per host.

Why not httpx: a command makes one to three calls to a daemon that is usually on
loopback, and importing httpx and building its client (an SSL context included, even
for ``http://``) took about 160 ms of a 400 ms ``herder ps``. Here a command keeps one
keep-alive connection per ``scheme://host:port`` for its whole life, and builds an SSL
context only when a URL is ``https://`` (verified with the system's CAs; ``SSL_CERT_FILE``
and ``SSL_CERT_DIR`` are honoured by the standard library; ``HERDER_TLS_CLIENT_CERT`` and
``HERDER_TLS_CLIENT_KEY`` name a client certificate, for a daemon that asks for one).

Every failure is one line on stderr and exit status 1 (``SystemExit``, so that this
module needs no typer): ``herder: 404: no process with slug 'x' (field: slug)`` for an
HTTP error (the status, the server's message and field), ``herder: cannot reach URL:
reason`` when the daemon cannot be reached.
"""

from __future__ import annotations

import http.client
import json
import sys
from urllib.parse import urlsplit

# Names for the type checker only: importing typing and pathlib took ~12 ms of a quick command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from pathlib import Path
    from typing import Any

TIMEOUT_S = 60.0  # a delete waits out the process's grace period (10 s by default) and more

_connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}


def fail(message: str, code: int = 1) -> None:
    """Print ``herder: <message>`` on stderr and exit with ``code``."""
    print(f"herder: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def headers_for(token_file: Path | None) -> dict[str, str]:
    """The bearer token read from ``token_file``, as a header; none without a file.

    An unreadable file is a one-line error (exit 1)."""
    if token_file is None:
        return {}
    try:
        with open(token_file, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as exc:
        fail(f"cannot read the token file {token_file}: {exc.strerror or exc}")
    return {"Authorization": f"Bearer {token}"}


def tls_context() -> ssl.SSLContext:
    """The context of the command's ``https://`` and ``wss://`` connections: the system's CAs
    (or ``SSL_CERT_FILE``'s), and the client certificate ``HERDER_TLS_CLIENT_CERT`` names
    (its key in it, or in ``HERDER_TLS_CLIENT_KEY``), for a manager run with ``--tls-client-ca``.

    Raises:
        SystemExit: 1, after one line on stderr, when the certificate cannot be used.
    """
    import os
    import ssl

    ctx = ssl.create_default_context()
    cert = os.environ.get("HERDER_TLS_CLIENT_CERT")
    if cert:
        try:
            ctx.load_cert_chain(cert, os.environ.get("HERDER_TLS_CLIENT_KEY") or None)
        except (OSError, ssl.SSLError) as exc:
            fail(f"cannot use the client certificate {cert} (HERDER_TLS_CLIENT_CERT): {exc}")
    return ctx


def tls_for(url: str) -> ssl.SSLContext | None:
    """``tls_context()`` for an ``https://`` or ``wss://`` URL; None for any other."""
    return tls_context() if url.strip().lower().startswith(("https://", "wss://")) else None


def _connection(scheme: str, host: str, port: int) -> http.client.HTTPConnection:
    key = (scheme, host, port)
    conn = _connections.get(key)
    if conn is None:
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=TIMEOUT_S, context=tls_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
        _connections[key] = conn
    return conn


def _send(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
    parts = urlsplit(url)
    hostname = parts.hostname
    if parts.scheme not in ("http", "https") or not hostname:
        fail(f"cannot reach {url}: not an http:// or https:// URL")
        raise AssertionError("unreachable")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]
    all_headers = {"Host": host_header, "Accept": "application/json", **headers}
    if body is not None:
        all_headers["Content-Type"] = "application/json"
    for attempt in (1, 2):
        conn = _connection(parts.scheme, hostname, port)
        try:
            conn.request(method, target, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
            if response.will_close:
                conn.close()
            return response.status, data
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            conn.close()  # a kept-alive connection the server closed meanwhile: once more
            if attempt == 2 or method not in ("GET", "HEAD"):
                fail(f"cannot reach {url}: {exc}")
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            fail(f"cannot reach {url}: {exc}")
    raise AssertionError("unreachable")


def error_message(status: int, data: bytes) -> str:
    """``<status>: <message> (field: <field>)`` from the daemons' error document, or the
    body's first line when it is not one."""
    try:
        doc = json.loads(data)
        message = doc.get("message") if isinstance(doc, dict) else None
    except ValueError:
        doc, message = None, None
    if message is None:
        text = data.decode("utf-8", "replace").strip().splitlines()
        return f"{status}: {text[0] if text else http.client.responses.get(status, 'error')}"
    field = doc.get("field")
    return f"{status}: {message} (field: {field})" if field else f"{status}: {message}"


def request(method: str, url: str, token_file: Path | None, body: Any = None, *, text: bool = False) -> Any:
    """Call a daemon's API: the JSON answer (``None`` for 204), or its text with ``text=True``.

    Raises:
        SystemExit: 1, after one line on stderr, for any status of 400 and above or a
            daemon out of reach.
    """
    payload = None if body is None else json.dumps(body).encode()
    status, data = _send(method, url, payload, headers_for(token_file))
    if status >= 400:
        fail(error_message(status, data))
    if text:
        return data.decode("utf-8", "replace")
    if status == 204 or not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        fail(f"{url} answered {status} with no JSON document: is it a herder daemon?")


__all__ = ["TIMEOUT_S", "error_message", "fail", "headers_for", "request", "tls_context"]
