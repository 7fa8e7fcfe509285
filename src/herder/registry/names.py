"""Service keys, versions and the prefix queries that find them.

A service registers under the seven-part key of Kite's Kontrol,
``/username/environment/name/version/region/hostname/id``, ordered from general to
specific. A query is a prefix of that key (``/alice/prod/math``), so "every instance of
alice's math service in prod" is one walk down a tree. The version part of a query may
also be a range (``>=1.2,<2``), because a caller asks for "a compatible math", not for
one build of it.

Choices, and why:

* **Characters.** A part takes ASCII letters, digits and ``. _ - : @``. Every one of
  them is an RFC 3986 path character that needs no percent-encoding, so a key is its own
  URL path (``GET /services/alice/prod/math``) and reads the same in a log line, a shell
  and a URL. A part may not be ``.`` or ``..``, which URL clients rewrite away.
* **Lengths.** A part holds at most 128 characters and a whole key or query at most 512:
  keys travel in URL paths and log lines, and a bound keeps a hostile one from costing
  memory or a storage index its limits.
* **Versions** are semantic versions of our own (no third-party library):
  ``MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]``, missing numbers being 0, ordered by the
  semver 2.0 rules. The version part of a key admits ``+`` (build metadata) besides the
  characters above.
* **Wildcards.** A query part may be ``*`` ("any"), so that the rule "no empty parts"
  still lets one skip a level: ``/alice/*/math`` is alice's math in every environment.
* **No empty query.** As in Kontrol, a query names at least the username; ``/*`` is the
  explicit way to ask for everyone's.

Nothing here does I/O: the manager, its storage and the CLI all share these rules.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

FIELDS: Final = ("username", "environment", "name", "version", "region", "hostname", "id")
"""The parts of a key, general to specific; a part's position is its index here plus one."""

VERSION_INDEX: Final = FIELDS.index("version")
MAX_PART_LENGTH: Final = 128
MAX_TEXT_LENGTH: Final = 512
WILDCARD: Final = "*"
LAYOUT: Final = "/" + "/".join(FIELDS)
QUERY_LAYOUT: Final = "/username[/environment[/name[/version[/region[/hostname[/id]]]]]]"

_PART = re.compile(r"[A-Za-z0-9._:@-]+")
_PART_CHARACTERS = "letters, digits and . _ - : @"
_NUMBER = r"(?:0|[1-9][0-9]*)"
_IDENTIFIERS = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
_VERSION = re.compile(
    rf"(?P<major>{_NUMBER})(?:\.(?P<minor>{_NUMBER})(?:\.(?P<patch>{_NUMBER}))?)?"
    rf"(?:-(?P<pre>{_IDENTIFIERS}))?(?:\+(?P<build>{_IDENTIFIERS}))?"
)
_VERSION_SHAPE = "MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD], e.g. 1.2.0 or 2.0.0-rc.1"
_OPERATOR = re.compile(r"(==|!=|>=|<=|>|<)?(.*)", re.DOTALL)
_MAX_QUOTED = 80


class BadName(ValueError):
    """A key, query or version that breaks the rules; ``str()`` says which rule and why.

    ``field`` names the part at fault (one of ``FIELDS``), or ``"key"`` / ``"query"`` when
    the text as a whole is wrong (no leading slash, too many parts, too long);
    ``position`` is the part's 1-based position when there is one; ``reason`` is the
    message without the quoted text, for an API that shows the text elsewhere.
    """

    def __init__(self, text: str, field: str, reason: str, *, position: int | None = None) -> None:
        self.text = text
        self.field = field
        self.reason = reason
        self.position = position
        super().__init__(f"{_quote(text)}: {reason}")

    def within(self, text: str) -> BadName:
        """The same fault, quoting ``text`` (the whole key or query the user wrote)."""
        return BadName(text, self.field, self.reason, position=self.position)


def _quote(text: str) -> str:
    """``text`` in double quotes, shortened and escaped so a message stays one short line."""
    shown = text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."
    escaped = shown.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped}"'


def _where(position: int) -> str:
    """``environment (position 2)``: the name people use, and the count people make."""
    return f"{FIELDS[position - 1]} (position {position})"


# -- versions -----------------------------------------------------------------------------

PrereleaseKey = tuple[tuple[int, int, str], ...]


def _prerelease_key(identifiers: tuple[str, ...]) -> PrereleaseKey:
    """Semver precedence of prerelease identifiers as a tuple Python compares natively.

    Numeric identifiers compare as numbers and sort before alphanumeric ones; when one
    list is a prefix of the other, the shorter sorts first (tuples do that already).
    """
    return tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in identifiers)


@dataclass(frozen=True, eq=False, slots=True)
class Version:
    """A semantic version, ordered by semver 2.0 precedence.

    ``1.2`` equals ``1.2.0`` (missing numbers are 0), a prerelease sorts before its
    release (``1.0.0-rc.1 < 1.0.0``) and build metadata takes no part in ordering or
    equality (``1.0.0+a == 1.0.0+b``), as semver says. ``text`` is what was written, so
    that a query prints back the way its author spelled it.
    """

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = ""
    text: str = ""
    _key: tuple[int, int, int, int, PrereleaseKey] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        released = 0 if self.prerelease else 1
        key = (self.major, self.minor, self.patch, released, _prerelease_key(self.prerelease))
        object.__setattr__(self, "_key", key)
        if not self.text:
            object.__setattr__(self, "text", self._canonical())

    def _canonical(self) -> str:
        pre = "-" + ".".join(self.prerelease) if self.prerelease else ""
        build = "+" + self.build if self.build else ""
        return f"{self.major}.{self.minor}.{self.patch}{pre}{build}"

    @classmethod
    def parse(cls, text: str) -> Version:
        """``text`` as a version, or ``BadName`` (field ``"version"``) saying what is wrong."""
        match = _VERSION.fullmatch(text)
        if match is None:
            raise BadName(text, "version", _version_fault(text))
        pre = tuple(match["pre"].split(".")) if match["pre"] else ()
        if any(len(i) > 1 and i.isdigit() and i.startswith("0") for i in pre):
            raise BadName(text, "version", "numeric prerelease identifiers have no leading zeros")
        return cls(
            major=int(match["major"]),
            minor=int(match["minor"] or 0),
            patch=int(match["patch"] or 0),
            prerelease=pre,
            build=match["build"] or "",
            text=text,
        )

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def __str__(self) -> str:
        return self.text

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key == other._key

    def __lt__(self, other: Version) -> bool:
        return self._key < other._key

    def __le__(self, other: Version) -> bool:
        return self._key <= other._key

    def __gt__(self, other: Version) -> bool:
        return self._key > other._key

    def __ge__(self, other: Version) -> bool:
        return self._key >= other._key


def _version_fault(text: str) -> str:
    """Why ``text`` is not a version, as specific as a cheap look allows."""
    if not text:
        return f"an empty version: expected {_VERSION_SHAPE}"
    if text[0] in "vV" and _VERSION.fullmatch(text[1:]):
        return f'"{text[0]}" before the number: write {text[1:]}'
    core = re.split(r"[-+]", text, maxsplit=1)[0]
    if any(len(n) > 1 and n.isdigit() and n.startswith("0") for n in core.split(".")):
        return "numbers have no leading zeros (two spellings of one version would compare equal)"
    return f"not a version: expected {_VERSION_SHAPE}"


# -- version ranges -----------------------------------------------------------------------

_COMPARE: Final[dict[str, Callable[[Version, Version], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


@dataclass(frozen=True, slots=True)
class Clause:
    """One comparison of a range: ``>=1.2``. ``op`` is as written; ``""`` means ``==``."""

    op: str
    version: Version

    def matches(self, version: Version) -> bool:
        return _COMPARE[self.op or "=="](version, self.version)

    def __str__(self) -> str:
        return f"{self.op}{self.version}"


@dataclass(frozen=True, slots=True)
class VersionRange:
    """Comma-separated clauses that must all hold: ``>=1.2,<2``; ``1.2`` alone means ``==1.2``.

    Prereleases are opt-in: a prerelease version matches only a range that itself names
    a prerelease (``>=2.0.0-rc.1``). Without that rule ``<2`` would match ``2.0.0-beta``,
    which sorts before 2.0.0 but is the very thing ``<2`` means to keep out, and
    "find me a compatible math" would hand out betas.
    """

    clauses: tuple[Clause, ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        """``text`` as a range; ``BadName`` (field ``"version"``) if a clause is wrong.

        Spaces around clauses are tolerated (``>=1.2, <2``) and dropped when printed.
        """
        clauses = tuple(_parse_clause(text, piece.strip()) for piece in text.split(","))
        return cls(clauses)

    @property
    def admits_prereleases(self) -> bool:
        return any(c.version.is_prerelease for c in self.clauses)

    def matches(self, version: Version) -> bool:
        if version.is_prerelease and not self.admits_prereleases:
            return False
        return all(c.matches(version) for c in self.clauses)

    def __str__(self) -> str:
        return ",".join(str(c) for c in self.clauses)


def _parse_clause(text: str, piece: str) -> Clause:
    """One clause of the range ``text``; errors name the clause when there are several."""
    where = f"clause {_quote(piece)}: " if "," in text else ""
    if not piece:
        raise BadName(text, "version", "an empty clause: clauses are separated by one comma")
    match = _OPERATOR.fullmatch(piece)
    assert match is not None  # the pattern matches any string
    op, rest = match[1] or "", match[2].strip()
    if rest[:1] in ("=", "<", ">", "!"):
        written = re.match(r"[=<>!]+", piece)
        shown = _quote(written[0] if written else piece)
        reason = f"{where}unknown operator {shown}: use ==, !=, >=, <=, >, < (none means ==)"
        raise BadName(text, "version", reason)
    try:
        return Clause(op, Version.parse(rest))
    except BadName as error:
        raise BadName(text, "version", f"{where}{error.reason}") from None


# -- parts --------------------------------------------------------------------------------


def _check_part(text: str, position: int, value: str) -> None:
    """Refuse a non-version part of ``text`` at ``position`` that breaks the naming rules."""
    name = FIELDS[position - 1]
    if len(value) > MAX_PART_LENGTH:
        reason = f"{_where(position)} is {len(value)} characters long, at most {MAX_PART_LENGTH}"
        raise BadName(text, name, reason, position=position)
    if _PART.fullmatch(value) is None:
        bad = next(c for c in value if _PART.fullmatch(c) is None)
        reason = f"bad character {_quote(bad)} in {_where(position)}: parts take {_PART_CHARACTERS}"
        raise BadName(text, name, reason, position=position)
    if value in (".", ".."):
        reason = f'{_where(position)} is "{value}", which URL clients rewrite away: give it a name'
        raise BadName(text, name, reason, position=position)


def _check_version_length(text: str, value: str) -> None:
    if len(value) > MAX_PART_LENGTH:
        position = VERSION_INDEX + 1
        reason = f"{_where(position)} is {len(value)} characters long, at most {MAX_PART_LENGTH}"
        raise BadName(text, "version", reason, position=position)


def _in_version_part(text: str, value: str, error: BadName) -> BadName:
    """A fault in the version ``value``, re-quoted with the whole key or query, at position 4."""
    position = VERSION_INDEX + 1
    reason = f"{_where(position)} {_quote(value)}: {error.reason}"
    return BadName(text, "version", reason, position=position)


def _check_structure(text: str, parts: Sequence[str], kind: str) -> None:
    """Refuse what is wrong with ``parts`` as a whole: length, count and empty parts.

    ``kind`` is ``"key"`` (exactly seven parts) or ``"query"`` (one to seven).
    """
    if len(text) > MAX_TEXT_LENGTH:
        raise BadName(text, kind, f"{len(text)} characters long, a {kind} has at most {MAX_TEXT_LENGTH}")
    if kind == "query" and not parts:
        reason = f"a query names at least the username: {QUERY_LAYOUT} (/* for every user)"
        raise BadName(text, "username", reason, position=1)
    if len(parts) > len(FIELDS):
        raise BadName(text, kind, f"{len(parts)} parts, at most {len(FIELDS)}: {LAYOUT}")
    for position, value in enumerate(parts, start=1):
        if not value:
            name = FIELDS[position - 1]
            hint = f"write {WILDCARD} to match any {name}" if kind == "query" else "a key names them all"
            reason = (
                f"empty part at position {position} ({name}): parts go general to specific "
                f"with none empty; {hint}"
            )
            raise BadName(text, name, reason, position=position)
    if kind == "key" and len(parts) != len(FIELDS):
        reason = f"{len(parts)} parts, a key has all {len(FIELDS)}: {LAYOUT} (a prefix is a query)"
        raise BadName(text, "key", reason)


def _split(text: str, kind: str) -> list[str]:
    """The parts of ``/a/b/c`` (one trailing slash tolerated); the leading slash is required."""
    if not isinstance(text, str):
        raise TypeError(f"a {kind} is a str, not {type(text).__name__}")
    if not text.startswith("/"):
        layout = LAYOUT if kind == "key" else QUERY_LAYOUT
        raise BadName(text, kind, f'a {kind} starts with "/": {layout}')
    body = text[1:-1] if text.endswith("/") else text[1:]
    return body.split("/") if body else []


# -- keys ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """The name a service instance registers under: seven parts, general to specific.

    Built from its parts (``ServiceKey(username="alice", ...)``) or parsed from
    ``/alice/prod/math/1.2.0/eu/host1/<id>``; ``str(key)`` gives that text back. Every
    part is checked on construction, so a ``ServiceKey`` in hand is a valid one.
    ``semver`` is the parsed version, kept so that range queries need not parse it again.
    """

    username: str
    environment: str
    name: str
    version: str
    region: str
    hostname: str
    id: str
    semver: Version = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = self.parts
        for position, value in enumerate(parts, start=1):
            if not isinstance(value, str):
                raise TypeError(f"{FIELDS[position - 1]} is a str, not {type(value).__name__}")
        text = "/" + "/".join(parts)
        _check_structure(text, parts, "key")
        for position, value in enumerate(parts, start=1):
            if position != VERSION_INDEX + 1:
                _check_part(text, position, value)
        _check_version_length(text, self.version)
        try:
            semver = Version.parse(self.version)
        except BadName as error:
            raise _in_version_part(text, self.version, error) from None
        object.__setattr__(self, "semver", semver)

    @classmethod
    def parse(cls, text: str) -> ServiceKey:
        """``/username/environment/name/version/region/hostname/id`` as a key, or ``BadName``."""
        parts = _split(text, "key")
        _check_structure(text, parts, "key")
        try:
            return cls(*parts)
        except BadName as error:
            raise error.within(text) from None

    @property
    def parts(self) -> tuple[str, str, str, str, str, str, str]:
        return (self.username, self.environment, self.name, self.version, self.region, self.hostname, self.id)

    def __str__(self) -> str:
        return "/" + "/".join(self.parts)


# -- queries ------------------------------------------------------------------------------


def _tidy_version_part(parts: tuple[str, ...]) -> tuple[str, ...]:
    """``parts`` with the spaces around a version range's clauses dropped (``>=1.2, <2``)."""
    if len(parts) <= VERSION_INDEX or " " not in parts[VERSION_INDEX]:
        return parts
    tidy = ",".join(piece.strip() for piece in parts[VERSION_INDEX].split(","))
    return (*parts[:VERSION_INDEX], tidy, *parts[VERSION_INDEX + 1 :])


@dataclass(frozen=True, slots=True)
class Query:
    """A prefix of a key, general to specific: ``/alice``, ``/alice/prod/math/>=1.2,<2``, ...

    ``parts`` holds one to seven parts as written; each is a value the key's part must
    equal, or ``*`` for any. The version part (the fourth) may instead be a range (see
    ``VersionRange``); an exact version there matches by version equality, so ``1.2``
    finds ``1.2.0``. ``version_range`` is that part parsed, or ``None`` when the query
    does not reach the version or says ``*``.
    """

    parts: tuple[str, ...]
    version_range: VersionRange | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.parts, str) or not all(isinstance(p, str) for p in self.parts):
            raise TypeError("a query's parts are a sequence of str (Query.parse takes the text)")
        object.__setattr__(self, "parts", _tidy_version_part(tuple(self.parts)))
        text = "/" + "/".join(self.parts)
        _check_structure(text, self.parts, "query")
        for position, value in enumerate(self.parts, start=1):
            if value != WILDCARD and position != VERSION_INDEX + 1:
                _check_part(text, position, value)
        object.__setattr__(self, "version_range", self._parse_version_part(text))

    def _parse_version_part(self, text: str) -> VersionRange | None:
        if len(self.parts) <= VERSION_INDEX or self.parts[VERSION_INDEX] == WILDCARD:
            return None
        value = self.parts[VERSION_INDEX]
        _check_version_length(text, value)
        try:
            return VersionRange.parse(value)
        except BadName as error:
            raise _in_version_part(text, value, error) from None

    @classmethod
    def parse(cls, text: str) -> Query:
        """``text`` as a query: a leading ``/``, one trailing ``/`` tolerated, 1 to 7 parts.

        Spaces around the clauses of a version range are tolerated and dropped.
        """
        parts = _split(text, "query")
        _check_structure(text, parts, "query")
        try:
            return cls(tuple(parts))
        except BadName as error:
            raise error.within(text) from None

    @classmethod
    def of(cls, key: ServiceKey, depth: int = len(FIELDS)) -> Query:
        """The query of ``key``'s first ``depth`` parts: all instances "like" this one."""
        return cls(key.parts[:depth])

    @property
    def depth(self) -> int:
        return len(self.parts)

    def accepts_version(self, version: Version) -> bool:
        return self.version_range is None or self.version_range.matches(version)

    def matches(self, key: ServiceKey) -> bool:
        """Whether ``key`` lies under this prefix (the reference that the index must agree with)."""
        for index, wanted in enumerate(self.parts):
            if index == VERSION_INDEX:
                if not self.accepts_version(key.semver):
                    return False
            elif wanted != WILDCARD and wanted != key.parts[index]:
                return False
        return True

    def __str__(self) -> str:
        return "/" + "/".join(self.parts)
