"""When a schedule's runs fall: a cron expression in a time zone, or a fixed interval.

Cron expressions are read and walked by ``cronsim`` (5 fields, or 6 with seconds
first), in the schedule's IANA time zone (``zoneinfo``), so that "0 2 * * *" is 02:00 on
the wall clock of that zone whatever its offset that day. Around DST changes the runs
fall as Debian's cron puts them: a time that does not exist on the spring-forward day
runs at the first moment after the gap, and a time that exists twice on the fall-back
day runs once, at its first occurrence.

An interval's runs are ``anchor + k * interval_s`` for whole ``k``: anchored at the
schedule's creation (or its last change of timing), so that a manager's pass running
late does not make the runs drift. The zone does not move them.

Times are Unix seconds (floats), as everywhere in the manager's database.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from herder.apierrors import FieldError

# The shortest interval (a user's schedule fires at most once a second) and the longest.
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 366 * 86400.0
# A cron expression whose runs are further apart than this is refused: "0 0 30 2 *"
# (February 30th) would never run, and walking to find that out would never end.
MAX_CRON_GAP_S = 5 * 366 * 86400.0


def zone_of(name: str) -> ZoneInfo:
    """The IANA zone ``name`` ("UTC", "Europe/Paris").

    Raises:
        FieldError: naming ``timezone``, for a name the system's zone data does not know.
    """
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise FieldError("timezone", f"{name!r} is not an IANA time zone (like UTC or Europe/Paris)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise FieldError(
            "timezone", f"{name!r} is not an IANA time zone (like UTC or Europe/Paris)"
        ) from None


@dataclass(frozen=True)
class Timing:
    """A schedule's timing: exactly one of ``cron`` and ``interval_s``; ``anchor`` for intervals."""

    cron: str | None
    interval_s: float | None
    timezone: str = "UTC"
    anchor: float = 0.0

    def check(self) -> None:
        """Refuse a timing that cannot run, naming the field.

        Raises:
            FieldError: ``cron`` unreadable or never due, ``interval_s`` out of bounds,
                ``timezone`` unknown, or neither or both of ``cron`` and ``interval_s``.
        """
        if (self.cron is None) == (self.interval_s is None):
            raise FieldError("cron", "give either cron (an expression) or interval_s (seconds), not both")
        zone_of(self.timezone)
        if self.interval_s is not None:
            if not MIN_INTERVAL_S <= self.interval_s <= MAX_INTERVAL_S:
                raise FieldError(
                    "interval_s", f"must be from {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g} seconds"
                )
            return
        assert self.cron is not None
        from cronsim import CronSimError

        fields = self.cron.split()
        if len(fields) not in (5, 6) or len(self.cron) > 256:
            raise FieldError(
                "cron", f"{self.cron!r}: 5 fields (minute hour day month weekday), or 6 with seconds first"
            )
        try:
            first = self.next_after(self.anchor)
        except CronSimError as exc:
            raise FieldError("cron", f"{self.cron!r}: {str(exc).lower()}") from None
        if first is None:
            raise FieldError("cron", f"{self.cron!r} comes due less than once in 5 years")

    def next_after(self, after: float) -> float | None:
        """The first run strictly after ``after``; None if there is none within a few years."""
        if self.interval_s is not None:
            return self._run(self._index(after, math.floor) + 1)
        found = self._walk(after, 1)
        return found[0] if found else None

    def latest(self, since: float, until: float, most: int) -> tuple[list[float], bool]:
        """The newest ``most`` runs in ``[since, until]``, oldest first, and whether older
        ones in that span were left out (the bound was reached).

        Walked backwards from ``until``, so that a manager down for a year with a
        one-second schedule costs ``most`` steps, not 31 million.
        """
        if until < since or most <= 0:
            return [], until >= since and most <= 0
        if self.interval_s is not None:
            last_k = self._index(until, math.floor)
            first_k = self._index(since, math.ceil)
            count = last_k - first_k + 1
            if count <= 0:
                return [], False
            taken = min(count, most)
            return [self._run(k) for k in range(last_k - taken + 1, last_k + 1)], count > most
        from cronsim import CronSim

        assert self.cron is not None
        zone = zone_of(self.timezone)
        # cronsim walks strictly before its start: start a moment after ``until`` (whole
        # seconds, which is the finest a cron expression names).
        start = datetime.fromtimestamp(math.floor(until) + 1, zone)
        found: list[float] = []
        for moment in CronSim(self.cron, start, reverse=True):
            stamp = moment.timestamp()
            if stamp < since:
                return found[::-1], False
            if len(found) == most:
                return found[::-1], True
            found.append(stamp)
        return found[::-1], False

    def _index(self, at: float, rounding: Callable[[float], int]) -> int:
        """Which run of an interval ``at`` is (``math.floor``: the last at or before it,
        ``math.ceil``: the first at or after it).

        A run's time is stored as computed (``_run``), so reading it back must give its own
        index: the quotient is rounded to a millionth of a run first, or float error (a
        time of 1.8e9 s keeps about 7 decimal places) would make a run its neighbour.
        """
        assert self.interval_s is not None
        return rounding(round((at - self.anchor) / self.interval_s, 6))

    def _run(self, index: int) -> float:
        assert self.interval_s is not None
        return self.anchor + index * self.interval_s

    def _walk(self, after: float, count: int) -> list[float]:
        from cronsim import CronSim

        assert self.cron is not None
        zone = zone_of(self.timezone)
        start = datetime.fromtimestamp(after, zone)
        limit = start + timedelta(seconds=MAX_CRON_GAP_S)
        found: list[float] = []
        for moment in CronSim(self.cron, start):
            if moment > limit:
                break
            found.append(moment.timestamp())
            if len(found) == count:
                break
        return found
