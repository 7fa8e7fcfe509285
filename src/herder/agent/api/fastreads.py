"""The status reads answered below FastAPI: ``GET /process-status/{slug}`` and ``GET /list-processes``.

Why: these two reads are what a monitor polls, and FastAPI's request path (a task per
request, the middleware chain, routing, the response object) costs several times what
building the answer does; supervisord answers the same question from a small XML-RPC
handler (issue 19, ``bench/bench_status.py``). The agent's protocol (``router.front``)
asks ``FastReads.answer`` for each request head before uvicorn starts the ASGI app, and
writes the bytes itself when it gets some.

What keeps the answers the routes' own:

* the documents come from ``routes.status_document`` and are encoded as ``JSONResponse``
  encodes (compact, UTF-8), the headers are the ones the app's stack sends
  (``content-length``, ``content-type``, an echoed ``X-Request-Id``), and the request is
  counted in ``HttpCounts`` under the route's template;
* the front door's rules all hold: ``Door.admits`` runs them (Host, Origin,
  credentials); a request it does not admit, an unknown or hidden slug, or anything
  not exactly a plain read (a body, a query string, an escaped path, ``HEAD``) is not
  answered here (None) and goes the usual way, which refuses it, logs it, or answers
  404, with the one error document.

Pre-encoded where the state did not change: each process's document is kept encoded,
in two halves around the three figures that move on every read (``uptime_s``,
``cpu_percent``, ``rss_bytes``); a read builds the document, compares it without those
figures to the one kept (a C-level dict comparison), and only encodes the figures when
nothing else changed.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from herder.agent.api.routes import status_document
from herder.net import http_url
from herder.principals import may_see, viewer_of
from herder.requestid import valid_id

if TYPE_CHECKING:
    from herder.agent.processes.supervisor import Supervisor, Unit
    from herder.frontdoor import Door
    from herder.metrics import HttpCounts

LIST_PATH = "/list-processes"
STATUS_PREFIX = "/process-status/"
# The route templates the requests are counted under (``herder.metrics.http``).
LIST_ROUTE = LIST_PATH
STATUS_ROUTE = STATUS_PREFIX + "{slug}"
# The figures that change on every read, in the document's order.
MOVING = ("uptime_s", "cpu_percent", "rss_bytes")
# Bounds of the caches: Hosts seen (a client may send any number), encoded documents
# beyond the processes that exist (pruned when passed).
MAX_BASES = 64
SPARE_PIECES = 64

_REQUEST_ID = b"x-request-id"
_JSON = b"content-type: application/json\r\n"


def encode(content: Any) -> bytes:
    """``content`` as ``JSONResponse`` renders it."""
    text = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
    return text.encode("utf-8")


def _figure(value: Any) -> bytes:
    """One moving figure as ``encode`` writes it inside a document."""
    kind = type(value)
    if value is None:
        return b"null"
    if kind is int:
        return str(value).encode()
    if kind is float and math.isfinite(value):
        return repr(value).encode()
    return encode(value)  # anything else (raises for NaN, as the route would)


def host_and_id(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """The request's one ``Host`` (None: none, or several: the usual way decides) and its
    first ``X-Request-Id`` (what ``RequestId`` echoes)."""
    host = request_id = None
    for name, value in headers:
        if name == b"host":
            if host is not None:
                return None, None
            host = value
        elif name == _REQUEST_ID and request_id is None:
            request_id = value
    return host, request_id


class BaseUrls:
    """``routes.base_url`` of the requests seen, by scheme and ``Host``: the same few on
    every request, so built once each (at most ``MAX_BASES`` kept)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[tuple[str, bytes], str] = {}

    def get(self, scheme: str, host: bytes) -> str:
        base = self._seen.get((scheme, host))
        if base is None:
            base = http_url(f"{scheme}://{host.decode('latin-1')}")
            if len(self._seen) >= MAX_BASES:
                self._seen.clear()
            self._seen[(scheme, host)] = base
        return base


class _Piece:
    """One process's document, encoded around its moving figures."""

    __slots__ = ("doc", "head", "tail", "whole")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        keys = list(doc)
        at = keys.index(MOVING[0])
        if at == 0 or tuple(keys[at : at + len(MOVING)]) != MOVING or at + len(MOVING) >= len(keys):
            # Not the layout this was written for: encoded whole on every read.
            self.whole = True
            self.head = self.tail = b""
            return
        items = list(doc.items())
        self.whole = False
        self.head = encode(dict(items[:at]))[:-1] + b',"uptime_s":'
        self.tail = b"," + encode(dict(items[at + len(MOVING) :]))[1:]

    def render(self, moving: tuple[Any, ...]) -> bytes:
        if self.whole:
            return encode({**self.doc, **dict(zip(MOVING, moving, strict=True))})
        uptime, cpu, rss = moving
        figures = (_figure(uptime), b',"cpu_percent":', _figure(cpu), b',"rss_bytes":', _figure(rss))
        return b"".join((self.head, *figures, self.tail))


class FastReads:
    """Answers the hot status reads of one agent, or says to go the usual way (None).

    ``enabled`` False sends every request the usual way (the tests compare the two);
    ``answered`` counts the requests answered here.
    """

    def __init__(self, supervisor: Supervisor, door: Door, counts: HttpCounts | None) -> None:
        self._sup = supervisor
        self._door = door
        self._counts = counts.counts if counts is not None else None
        self._bases = BaseUrls()
        self._pieces: dict[str, _Piece] = {}
        self.enabled = True
        self.answered = 0

    @staticmethod
    def wanted(path: str) -> bool:
        """Whether ``path`` is one of the reads answered here (before any other check)."""
        return path == LIST_PATH or path.startswith(STATUS_PREFIX)

    def answer(self, scope: Any) -> bytes | None:
        """The response's headers after the server's own, and its body, for a plain ``GET``
        of ``scope["path"]`` (no body, no query); None: go the usual way."""
        if not self.enabled:
            return None
        path = scope["path"]
        if path == LIST_PATH:
            route = LIST_ROUTE
            slug = None
        else:
            slug = path[len(STATUS_PREFIX) :]
            if not slug or "/" in slug:
                return None
            route = STATUS_ROUTE
        host, request_id = host_and_id(scope["headers"])
        if host is None or not self._door.admits(scope):
            return None
        base = self._bases.get(scope["scheme"], host)
        if slug is None:
            body = self._listing(scope, base)
        else:
            unit = self._sup.units.get(slug)
            if unit is None or not may_see(scope, unit.spec.owner):
                return None  # 404, from the route
            body = self._encoded(unit, base)
        head = [b"content-length: ", str(len(body)).encode(), b"\r\n", _JSON]
        if request_id is not None and (echo := valid_id(request_id)) is not None:
            head += [_REQUEST_ID, b": ", echo.encode("ascii"), b"\r\n"]
        head += [b"\r\n", body]
        if self._counts is not None:
            key = ("GET", route, 200)
            self._counts[key] = self._counts.get(key, 0) + 1
        self.answered += 1
        return b"".join(head)

    def _listing(self, scope: dict[str, Any], base: str) -> bytes:
        units = self._sup.units.values()
        viewer = viewer_of(scope)  # may_see's rule, its question asked once per listing
        if viewer is not None:
            units = [u for u in units if u.spec.owner == viewer]  # type: ignore[assignment]
        return b'{"processes":[' + b",".join([self._encoded(u, base) for u in units]) + b"]}"

    def _encoded(self, unit: Unit, base: str) -> bytes:
        doc = status_document(unit, base)
        try:
            moving = (doc["uptime_s"], doc["cpu_percent"], doc["rss_bytes"])
        except KeyError:
            return encode(doc)  # not the layout this was written for
        doc["uptime_s"] = doc["cpu_percent"] = doc["rss_bytes"] = None
        piece = self._pieces.get(unit.slug)
        if piece is None or piece.doc != doc:
            piece = _Piece(doc)
            if len(self._pieces) >= len(self._sup.units) + SPARE_PIECES:
                self._pieces = {s: p for s, p in self._pieces.items() if s in self._sup.units}
            self._pieces[unit.slug] = piece
        return piece.render(moving)
