"""Serving the dashboard's files at ``/ui/``, with headers that keep a page to itself.

What is served is a fixed list made at start (``manifest``): the files under
``static/`` and, from ``static/js`` (herder.js, ``clients/js``), ``herder.js`` and
``lib/*.js`` at ``/ui/herder.js`` and ``/ui/lib/...``. Nothing else is reachable,
whatever the path says (no ``..``, no ``node_modules``), and the front doors can list
the same paths as public ones.

Every answer carries a strict Content-Security-Policy (scripts, styles and connections
to this origin only, no inline script or style, no framing), ``nosniff`` and no
referrer; files are revalidated (``no-cache`` with an ETag), so an upgrade of herder is
seen at the next load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PREFIX = "/ui"
STATIC = Path(__file__).resolve().parent / "static"
ABOUT = "about.json"  # made by the server: which daemon this is
CLIENT = "js"  # static/js: herder.js's directory (a link to clients/js in a checkout)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def manifest(static: Path = STATIC) -> dict[str, Path]:
    """Each served path below ``/ui/`` ("" is the page) and its file."""
    files: dict[str, Path] = {"": static / "index.html"}
    for path in sorted(static.rglob("*")):
        rel = path.relative_to(static)
        if rel.parts[0] == CLIENT or not path.is_file() or path.suffix not in TYPES:
            continue
        files[rel.as_posix()] = path
    client = static / CLIENT
    for path in [client / "herder.js", *sorted((client / "lib").glob("*.js"))]:
        if path.is_file():
            files[path.relative_to(client).as_posix()] = path
    return files


def public_paths(static: Path = STATIC) -> frozenset[str]:
    """The URL paths of the dashboard's files (and ``/ui``, which redirects)."""
    return frozenset({PREFIX, f"{PREFIX}/{ABOUT}", *(f"{PREFIX}/{rel}" for rel in manifest(static))})


class UiFiles:
    """The ASGI app answering ``/ui`` and ``/ui/...`` from the manifest, and ``/ui/about.json``:
    which daemon serves the page (``manager`` or ``agent``: the page shows what it has) and
    the credential it takes (``install``)."""

    def __init__(self, daemon: str, auth: str = "none", static: Path = STATIC) -> None:
        from herder import __version__

        self._files = manifest(static)
        self._cache: dict[str, tuple[int, bytes, bytes]] = {}  # rel → (mtime_ns, body, etag)
        about = json.dumps({"daemon": daemon, "version": __version__, "auth": auth}).encode()
        self._about = (about, _etag(about))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == PREFIX:
            await _answer(send, 308, b"", [(b"location", f"{PREFIX}/".encode())])
            return
        rel = path[len(scope.get("root_path", "")) :].lstrip("/")  # below the mount
        if scope["method"] not in ("GET", "HEAD"):
            await _error(send, 405, "method_not_allowed", f"{scope['method']} is not served here", "method")
            return
        found = self._about if rel == ABOUT else self._read(rel)
        if found is None:
            await _error(send, 404, "not_found", f"no such file of the dashboard: {path!r}", "path")
            return
        body, etag = found
        headers = [
            (b"content-type", TYPES[Path(self._files.get(rel, ABOUT)).suffix].encode()),
            (b"cache-control", b"no-cache"),
            (b"etag", etag),
        ]
        if _header(scope, b"if-none-match") == etag:
            await _answer(send, 304, b"", headers)
            return
        await _answer(send, 200, b"" if scope["method"] == "HEAD" else body, headers, len(body))

    def _read(self, rel: str) -> tuple[bytes, bytes] | None:
        """The file's bytes and ETag, read again when it changed (a checkout being edited)."""
        path = self._files.get(rel)
        if path is None:
            return None
        try:
            mtime = path.stat().st_mtime_ns
            cached = self._cache.get(rel)
            if cached is None or cached[0] != mtime:
                body = path.read_bytes()
                cached = self._cache[rel] = (mtime, body, _etag(body))
        except OSError:
            return None
        return cached[1], cached[2]


def install(app: Any, daemon: str, auth: str = "none") -> None:
    """Serve the dashboard on ``app`` (a Starlette or FastAPI app), outside its OpenAPI.

    ``/ui/about.json`` says which ``daemon`` serves it (``manager``, ``agent``) and what
    credential it takes (``auth``: ``keys``, a key buys a token; ``token``, an agent
    taking its manager's tokens or its secret; ``secret``; ``none``), so that a page
    shows its sign-in, or not, without a refused call first (one more error in the
    browser's console). It says nothing that a refused call would not.
    """
    files = UiFiles(daemon, auth)
    app.router.add_route(PREFIX, files, include_in_schema=False)  # the redirect to /ui/
    app.router.mount(PREFIX, app=files)


def _etag(body: bytes) -> bytes:
    return b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _error(send: Any, status: int, code: str, message: str, field: str) -> None:
    body = json.dumps({"error": code, "message": message, "field": field}).encode()
    extra = [(b"allow", b"GET, HEAD")] if status == 405 else []
    await _answer(send, status, body, [(b"content-type", b"application/json"), *extra])


async def _answer(
    send: Any, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]], length: int | None = None
) -> None:
    size = len(body) if length is None else length
    all_headers = [*headers, *SECURITY_HEADERS, (b"content-length", str(size).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
