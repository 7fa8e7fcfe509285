"""The registry's core: keys, versions, prefix queries, the index and its watches.

Pure code, so these tests are plain and deterministic: no processes, no sleeps, time is
whatever float a test passes. The index is checked against the obvious brute-force
filter (``Query.matches`` over every registration) on random data and random histories.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from herder.registry import (
    FIELDS,
    MAX_PART_LENGTH,
    BadName,
    Event,
    Index,
    Query,
    Registration,
    ServiceKey,
    Version,
    VersionRange,
)

PARTS = {
    "username": "alice",
    "environment": "prod",
    "name": "math",
    "version": "1.2.0",
    "region": "eu",
    "hostname": "host1",
    "id": "7f0c1d2e",
}


def key(**overrides: str) -> ServiceKey:
    return ServiceKey(**{**PARTS, **overrides})


def registration(expires_at: float = math.inf, url: str = "ws://h:1/rpc", **parts: str) -> Registration:
    k = key(**parts)
    return Registration(key=k, url=url, owner=k.username, registered_at=0.0, expires_at=expires_at)


def ids(registrations: list[Registration]) -> list[str]:
    return sorted(r.id for r in registrations)


def refusal(parse: Any, text: str) -> BadName:
    with pytest.raises(BadName) as caught:
        parse(text)
    return caught.value


# -- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "/alice/prod/math/1.2.0/eu/host1/7f0c1d2e",
        "/alice@example.com/staging-2/math.v2/2.0.0-rc.1/us-east_1/host1.example.com/a:b:c",
        "/bob/dev/echo/3/local/10.0.0.7/0",
        "/bob/dev/echo/1.0.0+build.7/local/h/X-1",
    ],
)
def test_a_key_prints_as_it_was_parsed(text: str) -> None:
    parsed = ServiceKey.parse(text)
    assert str(parsed) == text
    assert ServiceKey.parse(str(parsed)) == parsed
    assert ServiceKey(*parsed.parts) == parsed


def test_a_key_has_its_parts_by_name_and_its_version_parsed() -> None:
    parsed = ServiceKey.parse("/alice/prod/math/1.2/eu/host1/7f0c1d2e/")
    assert parsed == key(version="1.2")
    assert dict(zip(FIELDS, parsed.parts, strict=True)) == {**PARTS, "version": "1.2"}
    assert parsed.semver == Version.parse("1.2.0")
    assert str(parsed) == "/alice/prod/math/1.2/eu/host1/7f0c1d2e"


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ("alice/prod/math/1.2.0/eu/h/i", "key", 'a key starts with "/"'),
        ("/alice/prod/math", "key", "3 parts, a key has all 7"),
        ("/alice/prod/math/1.2.0/eu/h/i/j", "key", "8 parts, at most 7"),
        ("/alice//math/1.2.0/eu/h/i", "environment", "empty part at position 2 (environment)"),
        ("/alice/prod/math/1.2.0/eu//i", "hostname", "empty part at position 6 (hostname)"),
        ("/alice/prod/math/*/eu/h/i", "version", 'version (position 4) "*": not a version'),
        ("/alice/prod/math/1.x/eu/h/i", "version", "not a version: expected MAJOR[.MINOR[.PATCH]]"),
        ("/alice/prod/math/v1.2/eu/h/i", "version", '"v" before the number: write 1.2'),
        ("/alice/prod/math/1.02/eu/h/i", "version", "numbers have no leading zeros"),
        ("/alice/prod/math/1.2.0-rc.01/eu/h/i", "version", "prerelease identifiers have no leading zeros"),
        ("/al ice/prod/math/1.2.0/eu/h/i", "username", 'bad character " " in username (position 1)'),
        ("/alice/prod/ma+th/1.2.0/eu/h/i", "name", 'bad character "+" in name (position 3)'),
        ("/alice/prod/math/1.2.0/éu/h/i", "region", 'bad character "\\xe9" in region (position 5)'),
        ("/alice/prod/math/1.2.0/eu/h/..", "id", "which URL clients rewrite away"),
        ("/alice/prod/math/1.2.0/eu/" + "h" * 129 + "/i", "hostname", "129 characters long, at most 128"),
        ("/alice/prod/" + "/".join(["x" * 100] * 5), "key", "characters long, a key has at most 512"),
    ],
)
def test_a_bad_key_is_refused_naming_its_part_and_why(text: str, field: str, says: str) -> None:
    error = refusal(ServiceKey.parse, text)
    assert error.field == field
    assert says in str(error)
    assert str(error).startswith('"')


def test_a_key_built_from_parts_is_checked_too() -> None:
    with pytest.raises(BadName, match=r"bad character \"/\" in name") as caught:
        key(name="a/b")
    assert caught.value.field == "name"
    assert caught.value.position == 3
    with pytest.raises(BadName, match="empty part at position 7"):
        key(id="")
    with pytest.raises(TypeError, match="region is a str"):
        key(region=5)  # type: ignore[arg-type]


def test_a_part_at_the_length_limit_is_accepted() -> None:
    assert len(key(hostname="h" * MAX_PART_LENGTH).hostname) == MAX_PART_LENGTH


# -- versions -------------------------------------------------------------------------------

ASCENDING = [
    "0.0.1",
    "0.1",
    "1.0.0-0",
    "1.0.0-2",
    "1.0.0-11",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.2",
    "1.9.9",
    "1.10.0",
    "2",
    "2.0.1-alpha",
    "10.0.0",
]


@pytest.mark.parametrize(("lower", "higher"), list(itertools.pairwise(ASCENDING)))
def test_versions_order_by_semver_precedence(lower: str, higher: str) -> None:
    low, high = Version.parse(lower), Version.parse(higher)
    assert low < high
    assert low <= high
    assert high > low
    assert high >= low
    assert low != high


def test_sorting_versions_gives_the_semver_order() -> None:
    shuffled = sorted(ASCENDING, key=lambda v: v[::-1])
    assert [str(v) for v in sorted(Version.parse(v) for v in shuffled)] == ASCENDING


@pytest.mark.parametrize(
    ("a", "b"), [("1", "1.0.0"), ("1.2", "1.2.0"), ("1.2.0+build.1", "1.2.0"), ("1.0.0-rc.1+x", "1.0.0-rc.1")]
)
def test_missing_numbers_are_zero_and_build_metadata_does_not_count(a: str, b: str) -> None:
    assert Version.parse(a) == Version.parse(b)
    assert hash(Version.parse(a)) == hash(Version.parse(b))
    assert str(Version.parse(a)) == a


def test_a_version_keeps_its_parts() -> None:
    v = Version.parse("2.0.1-rc.1+linux.7")
    assert (v.major, v.minor, v.patch, v.prerelease, v.build) == (2, 0, 1, ("rc", "1"), "linux.7")
    assert v.is_prerelease
    assert str(Version(1, 2, 3)) == "1.2.3"


@pytest.mark.parametrize(
    "text", ["", "1.", "1..2", "1.2.3.4", "-1", "1.2-", "1.2+", "1.2.3-a..b", "latest", "1 .2"]
)
def test_a_malformed_version_is_refused(text: str) -> None:
    assert refusal(Version.parse, text).field == "version"


# -- version ranges -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("range_", "version", "matches"),
    [
        (">=1.2,<2", "1.2.0", True),
        (">=1.2,<2", "1.9.9", True),
        (">=1.2,<2", "2.0.0", False),
        (">=1.2,<2", "1.1.9", False),
        (">=1.2,<2", "1.5.0-rc.1", False),  # prereleases are opt-in
        (">=1.2,<2", "2.0.0-beta", False),  # sorts before 2.0.0, still not "<2"
        (">=1.2,<2", "1.5.0+build.9", True),
        ("1.2", "1.2.0", True),
        ("==1.2", "1.2.1", False),
        ("!=1.2.0", "1.2.1", True),
        ("!=1.2.0", "1.2", False),
        (">1.0", "1.0.0", False),
        ("<=1.0", "1.0.0", True),
        (">=2.0.0-rc.1", "2.0.0-rc.2", True),  # a range naming a prerelease admits them
        (">=2.0.0-rc.1", "2.0.0-beta", False),
        (">=2.0.0-rc.1", "2.0.0", True),
        ("2.0.0-rc.1", "2.0.0-rc.1", True),
    ],
)
def test_a_version_range_matches_by_all_its_clauses(range_: str, version: str, matches: bool) -> None:
    assert VersionRange.parse(range_).matches(Version.parse(version)) is matches


def test_a_range_prints_back_as_written_without_spaces() -> None:
    assert str(VersionRange.parse(">=1.2, <2")) == ">=1.2,<2"
    assert str(VersionRange.parse("1.2")) == "1.2"


# -- queries --------------------------------------------------------------------------------

FULL_KEY = "/alice/prod/math/1.2.0/eu/host1/7f0c1d2e"


@pytest.mark.parametrize("depth", range(1, 8))
def test_a_query_at_every_depth_round_trips_and_matches_its_key(depth: int) -> None:
    text = "/" + "/".join(FULL_KEY.split("/")[1 : depth + 1])
    q = Query.parse(text)
    assert str(q) == text
    assert Query.parse(text + "/") == q
    assert q.depth == depth
    assert q == Query.of(key(), depth)
    assert q.matches(key())


@pytest.mark.parametrize("position", range(1, 8))
def test_a_query_refuses_a_key_that_differs_at_any_of_its_parts(position: int) -> None:
    field = FIELDS[position - 1]
    other = key(**{field: "9.9.9" if field == "version" else "other"})
    assert not Query.of(key()).matches(other)
    assert not Query.of(key(), position).matches(other)
    if position > 1:
        assert Query.of(key(), position - 1).matches(other)


@pytest.mark.parametrize("position", range(1, 8))
def test_a_wildcard_matches_any_value_at_its_position(position: int) -> None:
    field = FIELDS[position - 1]
    parts = list(key().parts)
    parts[position - 1] = "*"
    q = Query(tuple(parts))
    assert q.matches(key(**{field: "9.9.9" if field == "version" else "other"}))
    elsewhere = "region" if field != "region" else "hostname"
    assert not q.matches(key(**{elsewhere: "other"}))


def test_a_version_range_in_a_query() -> None:
    q = Query.parse("/alice/prod/math/>=1.2, <2")
    assert str(q) == "/alice/prod/math/>=1.2,<2"
    assert q.version_range is not None
    assert [q.matches(key(version=v)) for v in ["1.2.0", "1.9.9", "2.0.0", "1.1.9"]] == [
        True,
        True,
        False,
        False,
    ]
    assert Query.parse("/alice/prod/math/1.2").matches(key(version="1.2.0"))
    assert Query.parse("/alice/prod/math/*").version_range is None


def test_an_empty_part_in_a_query_is_refused_saying_why() -> None:
    error = refusal(Query.parse, "/alice//math")
    assert str(error) == (
        '"/alice//math": empty part at position 2 (environment): parts go general to specific '
        "with none empty; write * to match any environment"
    )
    assert error.field == "environment"
    assert error.position == 2
    assert error.text == "/alice//math"


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ("alice/prod", "query", 'a query starts with "/"'),
        ("", "query", 'a query starts with "/"'),
        ("/", "username", "a query names at least the username"),
        ("//", "username", "a query names at least the username"),
        ("//alice", "username", "empty part at position 1 (username)"),
        ("/alice//", "environment", "empty part at position 2 (environment)"),
        ("/a/b/c/1/e/f/g/h", "query", "8 parts, at most 7"),
        ("/alice/pr*d", "environment", 'bad character "*" in environment'),
        ("/alice/>=1.2", "environment", 'bad character ">" in environment'),
        ("/alice/prod/math/1.x", "version", 'version (position 4) "1.x": not a version'),
        ("/alice/prod/math/>=1.2,<2x", "version", 'clause "<2x": not a version'),
        ("/alice/prod/math/>=1.2,,<2", "version", "an empty clause"),
        ("/alice/prod/math/=1.2", "version", 'unknown operator "=": use =='),
        ("/alice/prod/math/=>1.2,<2", "version", 'clause "=>1.2": unknown operator "=>"'),
        ("/alice/prod/math/<", "version", "an empty version"),
        ("/alice/prod/math/1.2/eu/./i", "hostname", "which URL clients rewrite away"),
    ],
)
def test_a_bad_query_is_refused_naming_its_part_and_why(text: str, field: str, says: str) -> None:
    error = refusal(Query.parse, text)
    assert error.field == field
    assert says in str(error)


def test_a_query_quotes_the_text_as_written() -> None:
    error = refusal(Query.parse, "/alice/prod/math/>=1.2, <2x/")
    assert str(error).startswith('"/alice/prod/math/>=1.2, <2x/": version (position 4)')


def test_a_query_is_built_from_parts_with_the_same_rules() -> None:
    assert str(Query(("alice", "*", "math"))) == "/alice/*/math"
    with pytest.raises(BadName, match="empty part at position 2"):
        Query(("alice", "", "math"))
    with pytest.raises(TypeError):
        Query("/alice")  # type: ignore[arg-type]


# -- the index ------------------------------------------------------------------------------


def test_add_get_query_and_remove() -> None:
    index = Index()
    a = registration(id="a")
    b = registration(id="b", version="2.0.0")
    assert index.add(a) is None
    assert index.add(b) is None
    assert len(index) == 2
    assert "a" in index
    assert index.get("a") is a
    assert ids(index.query(Query.parse("/alice/prod/math"))) == ["a", "b"]
    assert ids(index.query(Query.parse("/alice/prod/math/>=1.2,<2"))) == ["a"]
    assert index.query(Query.parse("/bob")) == []
    assert index.remove("a") is a
    assert index.remove("a") is None
    assert index.get("a") is None
    assert ids(index.query(Query.parse("/alice"))) == ["b"]


def test_add_replaces_by_id_even_under_another_key() -> None:
    index = Index()
    first = registration(id="x", version="1.0.0")
    moved = registration(id="x", version="2.0.0", url="ws://h:2/rpc")
    index.add(first)
    assert index.add(moved) is first
    assert len(index) == 1
    assert index.get("x") is moved
    assert index.query(Query.parse("/alice/prod/math/1.0.0")) == []
    assert index.query(Query.parse("/alice/prod/math/2")) == [moved]


def test_expire_drops_what_is_due_earliest_first_and_nothing_else() -> None:
    index = Index()
    for id, ttl in [("late", 30.0), ("soon", 10.0), ("sooner", 5.0), ("forever", math.inf)]:
        index.add(registration(id=id, expires_at=ttl))
    assert index.next_expiry() == 5.0
    assert index.expire(4.9) == []
    assert ids(index.query(Query.parse("/alice"), now=10.0)) == ["forever", "late"]
    assert ids(index.query(Query.parse("/alice"))) == ["forever", "late", "soon", "sooner"]
    assert [r.id for r in index.expire(10.0)] == ["sooner", "soon"]
    assert ids(index.query(Query.parse("/alice"))) == ["forever", "late"]
    late = index.get("late")
    assert index.expire(1e9) == [late]
    assert ids(index.query(Query.parse("/alice"))) == ["forever"]
    assert index.next_expiry() is None


def test_renew_moves_the_expiry() -> None:
    index = Index()
    index.add(registration(id="a", expires_at=10.0))
    renewed = index.renew("a", 20.0, now=9.0)
    assert renewed is not None
    assert renewed.expires_at == 20.0
    assert index.get("a") == renewed
    assert index.expire(15.0) == []
    assert index.next_expiry() == 20.0
    assert [r.id for r in index.expire(20.0)] == ["a"]
    assert index.renew("a", 30.0) is None


def test_renewing_to_infinity_means_until_removed() -> None:
    index = Index()
    index.add(registration(id="a", expires_at=10.0))
    index.renew("a", math.inf)
    assert index.expire(1e9) == []
    assert index.next_expiry() is None
    assert "a" in index


def test_a_late_heartbeat_does_not_bring_an_expired_registration_back() -> None:
    index = Index()
    index.add(registration(id="a", expires_at=10.0))
    with index.watch(Query.parse("/alice")) as watch:
        assert index.renew("a", 40.0, now=10.0) is None
        assert "a" not in index
        assert [e.kind for e in watch.drain()] == ["deregistered"]


def test_renewing_many_times_keeps_the_heap_small() -> None:
    index = Index()
    for n in range(10):
        index.add(registration(id=f"r{n}", expires_at=10.0))
    for beat in range(1000):
        index.renew(f"r{beat % 10}", 10.0 + beat)
    assert len(index._heap) <= 2 * len(index) + 64  # renewals leave stale entries behind
    assert len(index.expire(1e9)) == 10


def test_removing_everything_leaves_no_empty_branches() -> None:
    index = Index()
    for n in range(50):
        index.add(registration(id=f"r{n}", region=f"r{n % 3}", version=f"1.{n % 4}"))
    for n in range(50):
        index.remove(f"r{n}")
    assert index._root.children == {}  # churn of short-lived ids must not grow the tree


# -- watches --------------------------------------------------------------------------------


def test_a_watch_hears_registered_and_deregistered_for_its_query_only() -> None:
    index = Index()
    math_watch = index.watch(Query.parse("/alice/prod/math/>=1.2,<2"))
    bob_watch = index.watch(Query.parse("/bob"))
    everyone = index.watch(Query.parse("/*"))
    ok = registration(id="ok", expires_at=5.0)
    too_new = registration(id="new", version="2.0.0")
    bobs = registration(id="bob1", username="bob")
    for r in (ok, too_new, bobs):
        index.add(r)
    index.remove("new")
    index.expire(5.0)
    assert math_watch.drain() == [("registered", ok), ("deregistered", ok)]
    assert bob_watch.drain() == [Event("registered", bobs)]
    assert [(e.kind, e.registration.id) for e in everyone.drain()] == [
        ("registered", "ok"),
        ("registered", "new"),
        ("registered", "bob1"),
        ("deregistered", "new"),
        ("deregistered", "ok"),
    ]


def test_a_replacement_is_one_registered_or_a_deregistered_when_it_leaves_the_query() -> None:
    index = Index()
    watch = index.watch(Query.parse("/alice/prod/math/1"))
    v1 = registration(id="x", version="1.0.0")
    v1_elsewhere = replace(v1, url="ws://h:9/rpc")
    v2 = registration(id="x", version="2.0.0")
    index.add(v1)
    index.add(v1_elsewhere)
    index.add(v2)
    index.add(v1)
    assert watch.drain() == [
        ("registered", v1),
        ("registered", v1_elsewhere),
        ("deregistered", v1_elsewhere),
        ("registered", v1),
    ]


def test_renewals_are_not_events() -> None:
    index = Index()
    index.add(registration(id="a", expires_at=10.0))
    watch = index.watch(Query.parse("/alice"))
    index.renew("a", 20.0)
    assert watch.drain() == []


def test_a_closed_watch_hears_nothing() -> None:
    index = Index()
    watch = index.watch(Query.parse("/alice"))
    watch.close()
    watch.close()
    index.add(registration(id="a"))
    assert len(watch) == 0
    assert watch.closed


def test_a_watch_keeps_the_newest_events_and_counts_what_it_dropped() -> None:
    index = Index()
    watch = index.watch(Query.parse("/alice"), maxlen=3)
    for n in range(5):
        index.add(registration(id=f"r{n}"))
    assert watch.overflowed == 2
    assert [e.registration.id for e in watch.drain()] == ["r2", "r3", "r4"]
    with pytest.raises(ValueError, match="at least one event"):
        index.watch(Query.parse("/alice"), maxlen=0)


def test_a_watch_callback_sees_each_event_after_the_index_changed() -> None:
    index = Index()
    seen: list[tuple[str, bool]] = []
    index.watch(Query.parse("/alice"), on_event=lambda e: seen.append((e.kind, e.registration.id in index)))
    index.add(registration(id="a"))
    index.remove("a")
    assert seen == [("registered", True), ("deregistered", False)]


def test_a_failing_callback_does_not_cost_the_index_or_other_watches() -> None:
    index = Index()

    def broken(event: Event) -> None:
        raise RuntimeError("callback bug")

    index.watch(Query.parse("/alice"), on_event=broken)
    healthy = index.watch(Query.parse("/alice"))
    with pytest.raises(RuntimeError, match="callback bug"):
        index.add(registration(id="a"))
    assert "a" in index
    assert [e.kind for e in healthy.drain()] == ["registered"]


# -- the index against brute force ----------------------------------------------------------

POOLS = {
    "username": ["alice", "bob"],
    "environment": ["prod", "dev"],
    "name": ["math", "echo"],
    "version": ["1.0.0", "1.2", "1.2.0", "1.9.9", "2.0.0", "2.0.0-beta", "1.2.0-rc.1", "1.2.0+b7"],
    "region": ["eu", "us"],
    "hostname": ["h1", "h2"],
    "id": [f"i{n}" for n in range(6)],  # few, so that replacements and renewals find their id
}
RANGES = [">=1.2,<2", "1.2", "!=2.0.0", "<2.0.0", ">=2.0.0-beta", "==1.2.0-rc.1", ">1.0", "2"]
TIMES = st.sampled_from([1.0, 2.0, 3.0, 5.0, 8.0, math.inf])
NOWS = st.sampled_from([0.0, 1.0, 2.0, 5.0, 100.0])  # clock readings: finite

keys = st.builds(ServiceKey, **{f: st.sampled_from(pool) for f, pool in POOLS.items()})
registrations = st.builds(
    Registration,
    key=keys,
    url=st.just("ws://h:1/rpc"),
    owner=st.just("alice"),
    registered_at=st.just(0.0),
    expires_at=TIMES,
)


@st.composite
def queries(draw: st.DrawFn) -> Query:
    depth = draw(st.integers(1, len(FIELDS)))
    parts = []
    for field in FIELDS[:depth]:
        choices = POOLS[field] + (RANGES if field == "version" else [])
        parts.append(draw(st.sampled_from(["*", *choices])))
    return Query(tuple(parts))


def brute_force(everything: dict[str, Registration], q: Query, now: float | None) -> list[str]:
    return sorted(
        r.id for r in everything.values() if q.matches(r.key) and (now is None or now < r.expires_at)
    )


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(
    st.lists(registrations, max_size=40),
    st.lists(queries(), min_size=1, max_size=5),
    st.none() | NOWS,
)
def test_query_agrees_with_a_filter_over_everything(
    added: list[Registration], qs: list[Query], now: float | None
) -> None:
    index = Index()
    everything: dict[str, Registration] = {}
    for r in added:
        index.add(r)
        everything[r.id] = r
    for q in qs:
        assert ids(index.query(q, now=now)) == brute_force(everything, q, now), str(q)


class IndexAgainstAModel(RuleBasedStateMachine):
    """Random histories of add, remove, renew and expire, checked against a plain dict.

    Two watches follow along; replaying their events must rebuild exactly the part of the
    model their query covers, which is what a watcher relies on.
    """

    def __init__(self) -> None:
        super().__init__()
        self.index = Index()
        self.model: dict[str, Registration] = {}
        self.watched = [Query.parse("/*"), Query.parse("/alice/*/math/>=1.2,<2")]
        self.watches = [self.index.watch(q) for q in self.watched]
        self.replayed: list[dict[str, ServiceKey]] = [{} for _ in self.watched]

    @rule(r=registrations)
    def add(self, r: Registration) -> None:
        assert self.index.add(r) == self.model.get(r.id)
        self.model[r.id] = r

    @rule(id=st.sampled_from(POOLS["id"]))
    def remove(self, id: str) -> None:
        assert self.index.remove(id) == self.model.pop(id, None)

    @rule(id=st.sampled_from(POOLS["id"]), expires_at=TIMES, now=st.none() | NOWS)
    def renew(self, id: str, expires_at: float, now: float | None) -> None:
        current = self.model.get(id)
        renewed = self.index.renew(id, expires_at, now=now)
        if current is None or (now is not None and now >= current.expires_at):
            assert renewed is None
            self.model.pop(id, None)
        else:
            assert renewed == replace(current, expires_at=expires_at)
            self.model[id] = replace(current, expires_at=expires_at)

    @rule(now=NOWS)
    def expire(self, now: float) -> None:
        dropped = self.index.expire(now)
        due = {id for id, r in self.model.items() if r.expires_at <= now}
        assert {r.id for r in dropped} == due
        assert [r.expires_at for r in dropped] == sorted(r.expires_at for r in dropped)
        for id in due:
            del self.model[id]

    @invariant()
    def queries_agree(self) -> None:
        assert len(self.index) == len(self.model)
        for q in (*self.watched, Query.parse("/bob/prod"), Query.parse("/alice/*/*/*/eu")):
            assert ids(self.index.query(q)) == brute_force(self.model, q, None)

    @invariant()
    def watches_replay_to_the_model(self) -> None:
        for q, watch, replayed in zip(self.watched, self.watches, self.replayed, strict=True):
            assert watch.overflowed == 0
            for kind, r in watch.drain():
                if kind == "registered":
                    replayed[r.id] = r.key
                else:
                    assert replayed.pop(r.id) == r.key
            assert replayed == {id: r.key for id, r in self.model.items() if q.matches(r.key)}


TestIndexAgainstAModel = pytest.mark.slow(IndexAgainstAModel.TestCase)
TestIndexAgainstAModel.settings = settings(
    derandomize=True, database=None, deadline=None, max_examples=300, stateful_step_count=40
)
