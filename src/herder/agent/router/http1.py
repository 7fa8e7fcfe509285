"""HTTP/1.1 message heads and bodies for the router's proxy, sans-IO and strict.

Why not httptools or h11: the proxy must decide, for every request, exactly what it
forwards, and reject anything two parsers could read two ways (request smuggling); the
rules below are ours, in one place, and tested against smuggling.

Speed (#19): a head the rules accept is matched whole by one regular expression
(``_REQUEST_HEAD``, ``_RESPONSE_HEAD``), then one more (``_SPECIAL``) picks out only the
headers the proxy acts on (framing, Host, Connection, hop-by-hop, X-Forwarded-*), with
their values: a few calls into C whatever the head's size, instead of Python work per
line. The usual heads (a Host and nothing else to act on; a Content-Length alone) are
built at once, and forwarded with their header block as received (``plain``). Anything
the whole-head match refuses goes through the same rules line by line, which name what
was wrong; ``tests/test_router_http1_fast.py`` checks that both paths read every head the
same. ``.venv/bin/python bench/bench_http1_head.py`` times it beside httptools (µs per
head, best of 7, on the 2-core machine shared with other work, so only ratios hold):
wrk's and curl's heads now take about what httptools alone takes (2-3 µs against 5-7
with the line-by-line rules); a browser's head with ``Connection: keep-alive`` still
takes the general path (11 µs).

The rules, stricter than RFC 9112's minimum on purpose:

* lines end in CRLF; a bare LF or a bare CR anywhere in a head is an error;
* a header line is ``token ":" value`` with no whitespace before the colon and no
  obsolete line folding; values hold no control characters but HTAB;
* a request has exactly one ``Host`` (HTTP/1.1), at most one ``Content-Length`` (digits
  only) and at most one ``Transfer-Encoding``, which must be exactly ``chunked``; never
  both framing headers;
* chunk-size lines are hexadecimal digits (at most 16), an optional extension, CRLF;
  chunk data is followed by CRLF; trailers are read and dropped.

Errors carry the HTTP status the proxy answers with (400, 431, 501, 505) and a message
that names what was wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE_BYTES = 4096

# A header block after the start line: token ":" value CRLF, repeated, nothing else.
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEADER_LINE = _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*"
_BLOCK = rb"(?:" + _HEADER_LINE + rb"\r\n)*"
_HEADER_BLOCK = re.compile(_BLOCK)
_ONE_HEADER = re.compile(_HEADER_LINE)
_METHOD = re.compile(_TOKEN)
_TARGET_FORM = rb"/[\x21-\x7e\x80-\xff]*|\*"
_TARGET = re.compile(_TARGET_FORM)
_STATUS_FORM = rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?"
_STATUS_LINE = re.compile(_STATUS_FORM)
# A whole head the rules above accept, in one match (the fast path: one pass in C). What
# it does not match goes through the line-by-line checks, which say what was wrong.
_REQUEST_HEAD = re.compile(
    rb"(" + _TOKEN + rb") (" + _TARGET_FORM + rb") HTTP/1\.([01])\r\n" + _BLOCK + rb"\r\n"
)
_RESPONSE_HEAD = re.compile(rb"(" + _STATUS_FORM + rb")\r\n" + _BLOCK + rb"\r\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?")

# Headers that describe one connection, not the message (RFC 9110 7.6.1), plus the
# framing header the proxy writes itself and the proxy's own credentials.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"content-length"})
# A request with none of these is forwarded with its header block as received.
_REWRITTEN_IN_REQUESTS = HOP_BY_HOP | (_FORWARDED - {b"content-length"})
# Every header the parser or the head rewriting acts on, with its value (whitespace around
# it left out), in a head that matched _REQUEST_HEAD or _RESPONSE_HEAD: there CRLF occurs
# only at the end of a line, so CRLF + name + ":" is exactly a header line of that name.
# The value stops before the CR (a lookahead: the next line's CRLF starts its own match).
_SPECIAL = re.compile(
    rb"\r\n(content-length|transfer-encoding|host|connection|upgrade|keep-alive|proxy-connection|te"
    rb"|trailer|proxy-authorization|proxy-authenticate|x-forwarded-for|x-forwarded-proto"
    rb"|x-forwarded-host):[ \t]*([^\r]*?)[ \t]*(?=\r)",
    re.IGNORECASE,
)


# Whole header lines the proxy drops (hop-by-hop, and those it writes itself), CRLF first:
# in a parsed head, cutting these out leaves the other lines as they were.
_HOP_NAMES = (
    rb"connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade"
    rb"|proxy-authorization|proxy-authenticate"
)
_DROPPED_FROM_REQUESTS = re.compile(
    rb"\r\n(?:" + _HOP_NAMES + rb"|x-forwarded-proto|x-forwarded-host|content-length):[^\r]*", re.IGNORECASE
)
_DROPPED_FROM_RESPONSES = re.compile(rb"\r\n(?:" + _HOP_NAMES + rb"|content-length):[^\r]*", re.IGNORECASE)
_CLOSE_HEADER = re.compile(rb"\r\nclose:", re.IGNORECASE)


class HttpError(Exception):
    """A message the proxy refuses; ``status`` is what it answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Head:
    """One parsed message head (a request's or a response's).

    ``raw`` is the head as received (CRLF CRLF included) and ``start_end`` where its start
    line ends: the forwarded head reuses the sender's bytes, as a whole when ``plain``
    (no header the proxy drops or rewrites: the usual case costs no per-line work).
    ``lines`` (the header lines without CRLF) and ``names`` (their lower-cased names) are
    made from ``raw`` when asked for.
    """

    raw: bytes
    start_end: int
    http11: bool
    content_length: int | None
    chunked: bool
    close: bool  # the sender asked for the connection to end after this message
    upgrade: bytes | None  # the Upgrade header's value when Connection names it
    plain: bool  # no hop-by-hop header (nor X-Forwarded-* in a request); a plain Content-Length

    @property
    def lines(self) -> list[bytes]:
        lines = self.raw[self.start_end + 2 : -2].split(b"\r\n")
        lines.pop()  # the block ends in CRLF: an empty last piece
        return lines

    @property
    def names(self) -> list[bytes]:
        return [line[: line.index(b":")].lower() for line in self.lines]


@dataclass(slots=True)
class RequestHead(Head):
    method: bytes
    target: bytes
    host: bytes | None


@dataclass(slots=True)
class ResponseHead(Head):
    status: int
    status_line: bytes


def find_head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """Index just past the blank line ending a head in ``buffer``, or -1 if not there yet."""
    end = buffer.find(b"\r\n\r\n", start)
    return -1 if end < 0 else end + 4


def _split_head(head: bytes) -> tuple[bytes, list[bytes]]:
    """The start line and the header lines of a complete head (ending in CRLF CRLF)."""
    newlines = head.count(b"\n")
    if newlines != head.count(b"\r\n") or head.count(b"\r") != newlines:
        raise HttpError(400, "a line in the head ends in a bare LF or holds a bare CR")
    first = head.index(b"\r\n")
    block = head[first + 2 : -2]
    if _HEADER_BLOCK.fullmatch(block) is None:
        raise HttpError(400, _describe_bad_header(block))
    lines = block.split(b"\r\n")
    lines.pop()  # the block ends in CRLF: an empty last piece
    return head[:first], lines


def _describe_bad_header(block: bytes) -> str:
    for line in block.split(b"\r\n"):
        if not line or _ONE_HEADER.fullmatch(line):
            continue
        if line[:1] in (b" ", b"\t"):
            return "obsolete line folding (a header line starting with whitespace) is not accepted"
        name, colon, _ = line.partition(b":")
        if not colon:
            return f"header line without a colon: {line[:40]!r}"
        if name != name.strip() or not name:
            return f"whitespace around the header name {name.strip()[:40]!r} is not accepted"
        return f"header {name[:40]!r} has an invalid name or a control character in its value"
    return "malformed header block"


@dataclass(slots=True)
class _Framing:
    length: int | None
    chunked: bool
    host: bytes | None  # b"" when there were several
    upgrade: bytes | None
    close: bool
    keep_alive: bool
    plain_length: bool  # no Content-Length, or one written as the number alone (no leading zero)


def _framing(headers: list[tuple[bytes, bytes]]) -> _Framing:
    """Read the framing and connection headers, refusing ambiguous framing.

    ``headers`` are (lower-cased name, value without the whitespace around it), at least
    every header line whose name ``_SPECIAL`` lists.
    """
    length: int | None = None
    lengths = 0
    te: bytes | None = None
    tes = 0
    host: bytes | None = None
    hosts = 0
    connection = b""
    upgrade: bytes | None = None
    plain_length = True
    for name, value in headers:
        if name == b"content-length":
            lengths += 1
            if not value.isdigit() or len(value) > 18:
                raise HttpError(400, f"Content-Length {value[:40]!r} is not a plain number")
            length = int(value)
            plain_length = value[:1] != b"0" or len(value) == 1
        elif name == b"transfer-encoding":
            tes += 1
            te = value.lower()
        elif name == b"host":
            hosts += 1
            host = value
        elif name == b"connection":
            connection += b"," + value.lower()
        elif name == b"upgrade":
            upgrade = value
    if lengths > 1:
        raise HttpError(400, "more than one Content-Length header (ambiguous framing)")
    if tes > 1:
        raise HttpError(400, "more than one Transfer-Encoding header (ambiguous framing)")
    if te is not None and length is not None:
        raise HttpError(400, "both Content-Length and Transfer-Encoding (ambiguous framing)")
    if te is not None and te != b"chunked":
        raise HttpError(400, f"Transfer-Encoding {te[:40]!r} is not accepted; only plain 'chunked' is")
    tokens = {t.strip(b" \t") for t in connection.split(b",")} if connection else set()
    return _Framing(
        length=length,
        chunked=te is not None,
        host=host if hosts <= 1 else b"",
        upgrade=upgrade if (upgrade is not None and b"upgrade" in tokens) else None,
        close=b"close" in tokens,
        keep_alive=b"keep-alive" in tokens,
        plain_length=plain_length,
    )


def _headers(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """(lower-cased name, value without the whitespace around it) of each header line."""
    out = []
    for line in lines:
        colon = line.index(b":")
        out.append((line[:colon].lower(), line[colon + 1 :].strip(b" \t")))
    return out


def parse_request_head(head: bytes) -> RequestHead:
    """Parse a complete request head (up to and including the blank line).

    A head the rules accept matches ``_REQUEST_HEAD`` whole, and only the headers the
    proxy acts on are then looked at (``_SPECIAL``): a few calls into C, whatever the
    head's size. Anything else goes through the same rules line by line, which name
    what was wrong.

    Raises:
        HttpError: anything the rules in the module docstring refuse.
    """
    match = _REQUEST_HEAD.fullmatch(head)
    if match is None:
        return _parse_request_line_by_line(head)
    method, target, minor = match.groups()
    http11 = minor == b"1"
    special = _SPECIAL.findall(head)
    start_end = len(method) + len(target) + 10
    # The usual: a Host (not empty: _framing refuses that) and nothing else to act on.
    if len(special) == 1 and special[0][1] and special[0][0].lower() == b"host":
        host = special[0][1]
        return RequestHead(head, start_end, http11, None, False, not http11, None, True, method, target, host)
    return _request(head, start_end, method, target, http11, [(n.lower(), v) for n, v in special])


def _parse_request_line_by_line(head: bytes) -> RequestHead:
    start, lines = _split_head(head)
    parts = start.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "the request line must be 'METHOD target HTTP/1.1'")
    method, target, version = parts
    if version == b"HTTP/1.1":
        http11 = True
    elif version == b"HTTP/1.0":
        http11 = False
    elif version.startswith(b"HTTP/"):
        raise HttpError(505, f"{version[:20]!r} is not supported; use HTTP/1.1")
    else:
        raise HttpError(400, "the request line must end in the HTTP version")
    if _METHOD.fullmatch(method) is None:
        raise HttpError(400, f"{method[:20]!r} is not a valid method")
    if _TARGET.fullmatch(target) is None:
        raise HttpError(400, "the request target must be a path starting with '/' (origin-form)")
    return _request(head, len(start), method, target, http11, _headers(lines))


def _request(
    head: bytes,
    start_end: int,
    method: bytes,
    target: bytes,
    http11: bool,
    headers: list[tuple[bytes, bytes]],
) -> RequestHead:
    """The request head, once its syntax passed (``headers``: as ``_framing`` takes them)."""
    framing = _framing(headers)
    if framing.host == b"" or (framing.host is None and http11):
        raise HttpError(400, "an HTTP/1.1 request needs exactly one Host header")
    return RequestHead(
        raw=head,
        start_end=start_end,
        http11=http11,
        content_length=framing.length,
        chunked=framing.chunked,
        close=framing.close or (not http11 and not framing.keep_alive),
        upgrade=framing.upgrade,
        plain=framing.plain_length and not any(name in _REWRITTEN_IN_REQUESTS for name, _ in headers),
        method=method,
        target=target,
        host=framing.host,
    )


def parse_response_head(head: bytes) -> ResponseHead:
    """Parse a complete response head from an instance (the two paths of requests' heads).

    Raises:
        HttpError: (status 502) the instance sent something that is not a valid head.
    """
    match = _RESPONSE_HEAD.fullmatch(head)
    if match is None:
        return _parse_response_line_by_line(head)
    start, minor, status = match.groups()
    special = _SPECIAL.findall(head)
    http11 = minor == b"1"
    if not special:  # nothing to act on
        return ResponseHead(head, len(start), http11, None, False, not http11, None, True, int(status), start)
    if len(special) == 1 and special[0][0].lower() == b"content-length":  # the usual
        value = special[0][1]
        if value.isdigit() and len(value) <= 18:
            plain = value[:1] != b"0" or len(value) == 1
            length = int(value)
            return ResponseHead(
                head, len(start), http11, length, False, not http11, None, plain, int(status), start
            )
    return _response(head, start, minor, status, [(n.lower(), v) for n, v in special])


def _parse_response_line_by_line(head: bytes) -> ResponseHead:
    try:
        start, lines = _split_head(head)
    except HttpError as exc:
        raise HttpError(502, f"the instance sent an invalid response: {exc}") from None
    line = _STATUS_LINE.fullmatch(start)
    if line is None:
        raise HttpError(502, f"the instance sent an invalid response: invalid status line {start[:60]!r}")
    minor, status = line.groups()
    return _response(head, start, minor, status, _headers(lines))


def _response(
    head: bytes, start: bytes, minor: bytes, status: bytes, headers: list[tuple[bytes, bytes]]
) -> ResponseHead:
    """The response head, once its syntax passed (``headers``: as ``_framing`` takes them)."""
    try:
        framing = _framing(headers)
    except HttpError as exc:
        raise HttpError(502, f"the instance sent an invalid response: {exc}") from None
    http11 = minor == b"1"
    return ResponseHead(
        raw=head,
        start_end=len(start),
        http11=http11,
        content_length=framing.length,
        chunked=framing.chunked,
        close=framing.close or (not http11 and not framing.keep_alive),
        upgrade=framing.upgrade,
        plain=framing.plain_length and not any(name in HOP_BY_HOP for name, _ in headers),
        status=int(status),
        status_line=start,
    )


def response_has_body(method: bytes, status: int) -> bool:
    """Whether a response to ``method`` with ``status`` carries a body (RFC 9112 6.3)."""
    return not (method == b"HEAD" or status < 200 or status in (204, 304))


def forwarded_request_head(
    request: RequestHead,
    *,
    client_ip: str,
    proto: bytes,
    body_framing: bytes | None,
    default_host: bytes = b"localhost",
) -> bytes:
    """The head to send to an instance: hop-by-hop headers removed, X-Forwarded-* set.

    ``body_framing`` is the framing line to add (``content-length: N`` or
    ``transfer-encoding: chunked``), or None for no body. An upgrade keeps its
    ``Upgrade`` header and ``Connection: upgrade``.
    """
    if request.plain and request.host is not None and request.http11:
        extra = _framing_to_add(request, body_framing)
        if extra is not None:  # the client's header block as received, and ours after it
            return b"%sx-forwarded-for: %s\r\nx-forwarded-proto: %s\r\nx-forwarded-host: %s\r\n%s\r\n" % (
                request.raw[:-2],
                client_ip.encode(),
                proto,
                request.host,
                extra,
            )
    if request.host is not None and request.http11:
        kept = _without_hop_by_hop(request.raw, _DROPPED_FROM_REQUESTS, in_request=True)
        if kept is not None:  # the client's lines but those dropped, and ours after them
            out = [kept, b"x-forwarded-for: ", client_ip.encode(), b"\r\nx-forwarded-proto: ", proto]
            out += [b"\r\nx-forwarded-host: ", request.host, b"\r\n"]
            if body_framing is not None:
                out.append(body_framing + b"\r\n")
            if request.upgrade is not None:
                out.append(b"connection: upgrade\r\nupgrade: " + request.upgrade + b"\r\n")
            out.append(b"\r\n")
            return b"".join(out)
    return _forwarded_request_line_by_line(
        request, client_ip=client_ip, proto=proto, body_framing=body_framing, default_host=default_host
    )


def _forwarded_request_line_by_line(
    request: RequestHead, *, client_ip: str, proto: bytes, body_framing: bytes | None, default_host: bytes
) -> bytes:
    """``forwarded_request_head``'s general way: every header line looked at."""
    drop = _connection_named(request) - {b"host"}  # HTTP/1.1 to the instance needs its Host
    out = [request.method, b" ", request.target, b" HTTP/1.1\r\n"]
    if request.host is None:  # HTTP/1.0 without Host: the address the client reached
        out.append(b"host: " + default_host + b"\r\n")
    xff: bytes | None = None
    for name, line in zip(request.names, request.lines, strict=True):
        if name in HOP_BY_HOP or name in drop or name in _FORWARDED:
            if name == b"x-forwarded-for":
                prior = line[16:].strip(b" \t")
                xff = prior if xff is None else xff + b", " + prior
            continue
        out.append(line)
        out.append(b"\r\n")
    client = client_ip.encode()
    out.append(b"x-forwarded-for: " + (xff + b", " + client if xff else client) + b"\r\n")
    out.append(b"x-forwarded-proto: " + proto + b"\r\n")
    if request.host is not None:
        out.append(b"x-forwarded-host: " + request.host + b"\r\n")
    if body_framing is not None:
        out.append(body_framing + b"\r\n")
    if request.upgrade is not None:
        out.append(b"connection: upgrade\r\nupgrade: " + request.upgrade + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def forwarded_response_head(response: ResponseHead, *, body_framing: bytes | None, close: bool) -> bytes:
    """The head to send to the client: hop-by-hop headers removed, our own framing."""
    if response.plain and response.status != 101:
        extra = _framing_to_add(response, body_framing)
        if extra is not None:  # the instance's head as received, HTTP/1.1, and ours after it
            if close:
                extra += b"connection: close\r\n"
            raw = response.raw
            if not response.http11:
                return b"HTTP/1.1%s%s\r\n" % (raw[8:-2], extra)
            return b"%s%s\r\n" % (raw[:-2], extra) if extra else raw
    kept = _without_hop_by_hop(response.raw, _DROPPED_FROM_RESPONSES, in_request=False)
    if kept is not None:  # the instance's lines but those dropped, and ours after them
        out = [b"HTTP/1.1", kept[8:]]
        if body_framing is not None:
            out.append(body_framing + b"\r\n")
        if response.status == 101 and response.upgrade is not None:
            out.append(b"connection: upgrade\r\nupgrade: " + response.upgrade + b"\r\n")
        elif close:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        return b"".join(out)
    return _forwarded_response_line_by_line(response, body_framing=body_framing, close=close)


def _without_hop_by_hop(raw: bytes, dropped: re.Pattern[bytes], *, in_request: bool) -> bytes | None:
    """``raw`` without its blank line and the lines ``dropped`` matches, or None when that is
    not the whole of what must go: ``Connection`` names another header, or (in a request)
    there is an X-Forwarded-For to extend. Then the line-by-line way does it."""
    for name, value in _SPECIAL.findall(raw):
        name = name.lower()
        if name == b"connection":
            for token in value.lower().split(b","):
                token = token.strip(b" \t")
                if token and token not in HOP_BY_HOP and (token != b"close" or _CLOSE_HEADER.search(raw)):
                    return None
        elif in_request and name == b"x-forwarded-for":
            return None
    return dropped.sub(b"", raw[:-2])


def _forwarded_response_line_by_line(
    response: ResponseHead, *, body_framing: bytes | None, close: bool
) -> bytes:
    """``forwarded_response_head``'s general way: every header line looked at."""
    drop = _connection_named(response)
    # The client's connection is ours: always HTTP/1.1, whatever the instance spoke.
    out = [b"HTTP/1.1", response.status_line[8:], b"\r\n"]
    for name, line in zip(response.names, response.lines, strict=True):
        if name in HOP_BY_HOP or name in drop or name == b"content-length":
            continue
        out.append(line)
        out.append(b"\r\n")
    if body_framing is not None:
        out.append(body_framing + b"\r\n")
    if response.status == 101 and response.upgrade is not None:
        out.append(b"connection: upgrade\r\nupgrade: " + response.upgrade + b"\r\n")
    elif close:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def _framing_to_add(head: Head, body_framing: bytes | None) -> bytes | None:
    """The framing line(s) to add to a ``plain`` head's own, or None if its own must go.

    A plain head's Content-Length (one, the number alone) is kept when it is the framing
    the proxy would write; any other framing is written after the head's lines.
    """
    length = head.content_length
    if length is None:
        return b"" if body_framing is None else body_framing + b"\r\n"
    return b"" if body_framing == b"content-length: %d" % length else None


def _connection_named(head: Head) -> frozenset[bytes]:
    """Header names listed in ``Connection`` (hop-by-hop by declaration)."""
    names: set[bytes] = set()
    for name, line in zip(head.names, head.lines, strict=True):
        if name == b"connection":
            names.update(t.strip(b" \t").lower() for t in line[11:].split(b","))
    names.discard(b"")
    return frozenset(names)


def simple_response(
    status: int, message: str, *, close: bool = True, retry_after: int | None = None
) -> bytes:
    """A complete small plain-text response written by the proxy itself."""
    body = (message + "\n").encode()
    reason = _REASONS.get(status, b"Error")
    extra = b"retry-after: %d\r\n" % retry_after if retry_after is not None else b""
    connection = b"connection: close\r\n" if close else b""
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n%s%s\r\n%s"
        % (status, reason, len(body), extra, connection, body)
    )


_REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Content Too Large",
    421: b"Misdirected Request",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


class ChunkedDecoder:
    """Decode a chunked body incrementally and strictly.

    ``feed(data)`` returns the body bytes it could decode and how many input bytes it
    consumed; input past the end of the body (the next pipelined message) is not
    consumed. ``done`` turns true after the last chunk and the trailer section.
    """

    __slots__ = ("_buffer", "_remaining", "_state", "done")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._remaining = 0
        self._buffer = b""
        self.done = False

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Decode from ``data``; return (body pieces, bytes of ``data`` consumed).

        Raises:
            HttpError: a malformed chunk line or a missing CRLF (400).
        """
        pieces: list[bytes] = []
        buffered = len(self._buffer)
        work = self._buffer + data if buffered else data
        pos = 0
        end = len(work)
        while pos < end and not self.done:
            state = self._state
            if state == self._DATA:
                take = min(self._remaining, end - pos)
                pieces.append(work[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = self._DATA_END
                continue
            if state == self._DATA_END:
                if end - pos < 2:
                    break
                if work[pos : pos + 2] != b"\r\n":
                    raise HttpError(400, "chunk data is not followed by CRLF")
                pos += 2
                self._state = self._SIZE
                continue
            line_end = work.find(b"\r\n", pos)
            if line_end - pos > MAX_CHUNK_LINE_BYTES:
                raise HttpError(400, "chunk line too long")
            if line_end < 0:
                if end - pos > MAX_CHUNK_LINE_BYTES or b"\n" in work[pos:end]:
                    raise HttpError(400, "chunk line too long or ending in a bare LF")
                break
            self._line(work[pos:line_end])
            pos = line_end + 2
        if self.done:
            self._buffer = b""
            return pieces, pos - buffered
        self._buffer = work[pos:end]  # an incomplete line waits for more input
        return pieces, len(data)

    def _line(self, line: bytes) -> None:
        if self._state == self._SIZE:
            self._size_line(line)
        elif not line:  # the empty line that ends the trailers
            self.done = True
        elif b"\n" in line or b"\r" in line or b":" not in line:
            raise HttpError(400, "malformed trailer line")

    def _size_line(self, line: bytes) -> None:
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None or b"\n" in line or b"\r" in line:
            raise HttpError(400, f"malformed chunk-size line {line[:40]!r}")
        size = int(match.group(1), 16)
        if size == 0:
            self._state = self._TRAILER
        else:
            self._remaining = size
            self._state = self._DATA


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (empty ``data`` would end the body: not allowed here)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
