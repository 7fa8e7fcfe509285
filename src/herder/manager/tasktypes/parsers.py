"""The built-in parsers: ``frames`` (Blender, ffmpeg), ``percent`` (``N%``) and ``none``.

Each reads one output line at a time and reports only a value that differs from the
last one it reported: Blender prints ``Fra:12`` on every status line of a frame
(hundreds of them), and each report becomes a write by the manager, so repeating the
same frame would cost a database write per line for nothing. That state is why the
manager makes one parser per work item.
"""

from __future__ import annotations

import re

from herder.manager.tasktypes import Progress

# Frame numbers end up in the seed's integer columns (32-bit in PostgreSQL): a number
# outside that range in some output is not a frame, and is ignored.
FRAME_LIMIT = 2**31 - 1

# Blender: "Fra:12 Mem:22.45M (Peak 23.11M) | Time:00:00.56 | ..." (negative frames exist).
# ffmpeg: "frame=  240 fps= 30 q=28.0 size=..." and, with -progress, "frame=240".
# (?!\d) after at most 10 digits: a longer number matches not at all, not in part.
_FRAME = re.compile(r"\bFra:\s*(-?\d{1,10})(?!\d)|\bframe=\s*(\d{1,10})(?!\d)")
# A number directly before "%", whole (not the tail of a longer number or decimal):
# "45%", " 45.5 %", "[ 12%]", "progress: 100%", " 45%|████▌ | 45/100".
_PERCENT = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?|\.\d+)\s*%")


class FramesParser:
    """``frames``: the frame a renderer or encoder is at, from Blender's ``Fra:N`` or
    ffmpeg's ``frame=N``; the last one on a line counts (ffmpeg separates its status
    updates with carriage returns, so one "line" may hold several)."""

    name: str = "frames"

    def __init__(self) -> None:
        self._last: int | None = None

    def parse(self, line: str) -> Progress | None:
        """``Progress(frame=N)`` when the line shows a frame other than the last one shown."""
        frame: int | None = None
        for match in _FRAME.finditer(line):
            number = int(match.group(1) or match.group(2))
            if -FRAME_LIMIT <= number <= FRAME_LIMIT:
                frame = number
        if frame is None or frame == self._last:
            return None
        self._last = frame
        return Progress(frame=frame)


class PercentParser:
    """``percent``: a number followed by ``%``; the last one on a line counts, clamped to 0..100."""

    name: str = "percent"

    def __init__(self) -> None:
        self._last: float | None = None

    def parse(self, line: str) -> Progress | None:
        """``Progress(percent=x)`` when the line shows a percentage other than the last one shown."""
        numbers = _PERCENT.findall(line)
        if not numbers:
            return None
        percent = min(100.0, max(0.0, float(numbers[-1])))
        if percent == self._last:
            return None
        self._last = percent
        return Progress(percent=percent)


class NoneParser:
    """``none``: output says nothing about progress (the task is followed by its status only)."""

    name: str = "none"

    def parse(self, line: str) -> Progress | None:
        """Always ``None``."""
        return None
