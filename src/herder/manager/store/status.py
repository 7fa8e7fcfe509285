"""A task's items counted by status, as the store reads them (one aggregate per round).

The rule that turns the counts into the task's status, and the statuses themselves,
are in ``herder.manager.states`` (``derive_status``, ``ACTIVE``, ``TERMINAL``; re-exported
here for the modules that imported them from this one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from herder.manager.states import ACTIVE as ACTIVE
from herder.manager.states import TERMINAL as TERMINAL
from herder.manager.states import ItemStatus
from herder.manager.states import derive_status as derive_status


@dataclass
class TaskCounts:
    """A task's items counted by status, with the frames they reached."""

    by_status: dict[str, int] = field(default_factory=dict)
    reported_frame: int | None = None  # the furthest frame any item reported
    completed_frame: int | None = None  # the last frame of the furthest completed item

    def add(self, status: str, n: int, frame: int | None, frame_end: int | None) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + n
        self.reported_frame = _max(self.reported_frame, frame)
        if status == ItemStatus.COMPLETED:
            self.completed_frame = _max(self.completed_frame, frame_end)

    def frame(self, previous: int | None) -> int | None:
        """The task's current frame: never backwards."""
        return _max(_max(self.reported_frame, self.completed_frame), previous)

    def __getitem__(self, status: str) -> int:
        return self.by_status.get(status, 0)


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
