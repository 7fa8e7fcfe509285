"""When schedules' runs fall (``herder.manager.schedules.timing``): cron in a zone, DST, intervals.

No database and no waiting: the times are computed from fixed instants.
"""

from __future__ import annotations

import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from herder.apierrors import FieldError
from herder.manager.schedules.timing import Timing

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")


def at(zone: ZoneInfo, *parts: int) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()  # type: ignore[misc]


def local(stamp: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(stamp, zone).isoformat()


def runs(timing: Timing, after: float, count: int) -> list[str]:
    found, now = [], after
    for _ in range(count):
        nxt = timing.next_after(now)
        assert nxt is not None
        found.append(local(nxt, ZoneInfo(timing.timezone)))
        now = nxt
    return found


def test_a_cron_expression_is_read_on_its_zones_wall_clock() -> None:
    every_nine = Timing("0 9 * * *", None, "America/New_York")
    # 2026-01-05 13:00 UTC is 08:00 in New York (EST, UTC-5): the next run is 09:00 there.
    assert runs(every_nine, at(UTC, 2026, 1, 5, 13, 0), 2) == [
        "2026-01-05T09:00:00-05:00",
        "2026-01-06T09:00:00-05:00",
    ]
    # In summer the same expression is 13:00 UTC, not 14:00.
    assert every_nine.next_after(at(UTC, 2026, 7, 1, 0, 0)) == at(UTC, 2026, 7, 1, 13, 0)


def test_the_seconds_field_is_optional_and_first() -> None:
    quarter = Timing("*/15 * * * * *", None, "UTC")
    start = at(UTC, 2026, 1, 1, 0, 0, 0) + 0.5  # a run is strictly after the moment asked
    assert runs(quarter, start, 3) == [
        "2026-01-01T00:00:15+00:00",
        "2026-01-01T00:00:30+00:00",
        "2026-01-01T00:00:45+00:00",
    ]
    assert Timing("0 * * * *", None, "UTC").next_after(at(UTC, 2026, 1, 1, 0, 0)) == at(UTC, 2026, 1, 1, 1, 0)


def test_across_the_spring_gap_a_missing_time_runs_once_just_after_it() -> None:
    # Paris skips 02:00-03:00 on 2026-03-29: 02:30 does not exist that day.
    half_past_two = Timing("30 2 * * *", None, "Europe/Paris")
    assert runs(half_past_two, at(PARIS, 2026, 3, 28, 12, 0), 3) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    # Hourly runs go straight from 01:00 to 03:00 (02:00 does not exist; nothing doubles).
    hourly = Timing("0 * * * *", None, "Europe/Paris")
    assert runs(hourly, at(PARIS, 2026, 3, 29, 0, 30), 3) == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]


def test_across_the_autumn_fold_a_repeated_time_runs_once() -> None:
    # Paris has 02:00-03:00 twice on 2026-10-25: 02:30 runs at its first occurrence only.
    half_past_two = Timing("30 2 * * *", None, "Europe/Paris")
    assert runs(half_past_two, at(PARIS, 2026, 10, 24, 12, 0), 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_an_interval_keeps_its_phase_and_ignores_dst() -> None:
    anchor = at(PARIS, 2026, 3, 29, 1, 0)
    hourly = Timing(None, 3600.0, "Europe/Paris", anchor)
    first = hourly.next_after(anchor)
    assert first == anchor + 3600  # exactly an hour of real time, the gap notwithstanding
    assert local(first, PARIS) == "2026-03-29T03:00:00+02:00"
    # Asked late (a pass that ran 10 minutes after a run), the next stays on the phase.
    assert hourly.next_after(anchor + 2 * 3600 + 600) == anchor + 3 * 3600
    assert hourly.next_after(anchor + 3600) == anchor + 2 * 3600  # strictly after


def test_latest_runs_are_walked_back_and_bounded() -> None:
    every_10 = Timing(None, 10.0, "UTC", 1000.0)
    assert every_10.latest(1010, 1040, 100) == ([1010.0, 1020.0, 1030.0, 1040.0], False)
    assert every_10.latest(1010, 1_000_000_000, 3) == ([999_999_980.0, 999_999_990.0, 1_000_000_000.0], True)
    cron = Timing("0 * * * *", None, "UTC")
    start = at(UTC, 2000, 1, 1, 0, 0)
    # A year of hourly runs missed: the newest three, found without walking the year.
    newest, more = cron.latest(start, at(UTC, 2001, 1, 1, 0, 30), 3)
    assert [local(t, UTC) for t in newest] == [
        "2000-12-31T22:00:00+00:00",
        "2000-12-31T23:00:00+00:00",
        "2001-01-01T00:00:00+00:00",
    ]
    assert more


@pytest.mark.parametrize(
    ("cron", "interval_s", "zone", "field", "words"),
    [
        ("61 * * * *", None, "UTC", "cron", "bad minute"),
        ("* * *", None, "UTC", "cron", "5 fields"),
        ("0 0 30 2 *", None, "UTC", "cron", "bad day-of-month"),
        ("0 9 * * *", None, "Mars/Olympus", "timezone", "not an IANA time zone"),
        ("0 9 * * *", None, "../../etc/passwd", "timezone", "not an IANA time zone"),
        (None, 0.5, "UTC", "interval_s", "from 1"),
        (None, None, "UTC", "cron", "either"),
        ("* * * * *", 60.0, "UTC", "cron", "either"),
    ],
)
def test_a_timing_that_cannot_run_is_refused_naming_its_field(
    cron: str | None, interval_s: float | None, zone: str, field: str, words: str
) -> None:
    with pytest.raises(FieldError) as caught:
        Timing(cron, interval_s, zone).check()
    assert caught.value.field == field
    assert words in str(caught.value)


def test_an_intervals_runs_read_back_as_themselves_whatever_the_float_error() -> None:
    # A run's time is stored as computed; read back from the database it must be the same
    # run (not its neighbour), or the pass after it would skip or repeat one.
    chance = random.Random(18)
    for _ in range(20_000):
        anchor = chance.uniform(1.7e9, 1.8e9)
        interval = chance.choice([chance.uniform(1, 100_000), 7.3, 0.1 * chance.randint(10, 1000)])
        timing = Timing(None, interval, "UTC", anchor)
        after = anchor + chance.uniform(0, 1e8)
        run = timing.next_after(after)
        assert run is not None
        following = timing.next_after(run)
        assert following is not None
        assert timing.latest(run, run, 5) == ([run], False)
        assert timing.latest(run, following, 5) == ([run, following], False)
        assert following - run == pytest.approx(interval)
