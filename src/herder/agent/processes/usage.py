"""What a supervised process costs right now: its CPU share and resident memory.

For ``herder ps`` and the status documents. The figures are of the process the unit
spawned (its pid), not of what it forked: summing a tree means walking ``/proc``, which
the listing cannot afford on every request (it is benchmarked, ``bench/bench_status.py``).

Each unit keeps one ``Sampler``. A sample is one read of ``/proc/<pid>/stat`` (a few
microseconds, on the event loop: no thread hop), taken when a document asks and the last
one is older than ``MAX_AGE_S``; in between, documents reuse it. ``cpu_percent`` is the
CPU time used between the last two samples over the wall time between them (100 is one
core busy); with one sample only, it is the average since the process started, as
``ps`` shows it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# A document shows figures at most this old: fresh enough for a `ps`, and a listing
# served in a loop reads each process's stat file at most once a second.
MAX_AGE_S = 1.0

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Usage:
    """A process's figures; both None while no process runs (or it could not be read)."""

    cpu_percent: float | None = None
    rss_bytes: int | None = None


NONE = Usage()


def read_stat(pid: int) -> tuple[float, int] | None:
    """(CPU seconds used, resident bytes) of ``pid``, or None if it is gone.

    ``/proc/<pid>/stat``: the command name (field 2) may hold spaces and parentheses,
    so the fields are counted after its last ``)``; utime and stime are fields 14 and 15,
    rss (in pages) field 24.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        cpu_ticks = int(fields[11]) + int(fields[12])
        rss_pages = int(fields[21])
    except (OSError, IndexError, ValueError):
        return None
    return cpu_ticks / _TICKS_PER_S, rss_pages * _PAGE_BYTES


def read_first(pid: int) -> tuple[float, int, int] | None:
    """``read_stat(pid)`` and its start time (clock ticks after boot, field 22), or None.

    At a spawn, one read serves both the descendants tracker (which knows a process by
    pid and start time) and the unit's first sample (``Sampler.seed``).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        cpu_ticks = int(fields[11]) + int(fields[12])
        rss_pages = int(fields[21])
        start = int(fields[19])
    except (OSError, IndexError, ValueError):
        return None
    return cpu_ticks / _TICKS_PER_S, rss_pages * _PAGE_BYTES, start


class Sampler:
    """One unit's last sample, and the one before it (for the CPU share)."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._taken = 0.0  # time.monotonic() of the last sample
        self._cpu_s = 0.0
        self._usage = NONE

    def seed(self, pid: int, now: float, cpu_s: float, rss: int) -> None:
        """Take a sample of ``pid`` read elsewhere at ``now`` (its spawn: ``read_first``),
        as ``sample`` would have read it then: documents within ``MAX_AGE_S`` reuse it."""
        self._pid, self._taken, self._cpu_s = pid, now, cpu_s
        self._usage = Usage(cpu_percent=0.0, rss_bytes=rss)

    def sample(self, pid: int, started_mono: float, now: float) -> Usage:
        """The figures of ``pid``, read again if older than ``MAX_AGE_S``.

        ``started_mono``: when the process started, for the first sample's average;
        ``now``: the caller's ``time.monotonic()``. ``NONE`` if ``pid`` is gone.
        """
        if pid == self._pid and now - self._taken < MAX_AGE_S:
            return self._usage
        read = read_stat(pid)
        if read is None:
            return NONE
        cpu_s, rss = read
        if pid == self._pid:
            since, used = now - self._taken, cpu_s - self._cpu_s
        else:  # a new process: its average since it started
            since, used = now - started_mono, cpu_s
        percent = round(100.0 * max(used, 0.0) / since, 1) if since > 0 else 0.0
        self._pid, self._taken, self._cpu_s = pid, now, cpu_s
        self._usage = Usage(cpu_percent=percent, rss_bytes=rss)
        return self._usage
