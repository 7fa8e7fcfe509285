"""How a task's status follows from its work items' (one rule for every code path).

A task is what a user submitted; its work items are what a compiler made of it. The
task's status is derived, never set by hand (but for ``canceled``, which a user sets):

* ``canceled`` stays canceled; any ``failed`` item fails the task;
* every item ``completed``: the task is completed;
* otherwise ``paused`` (a user holds it), ``rendering`` (something runs: the seed's
  word), ``assigned`` (handed out, not started yet) or ``queued``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIVE = ("assigned", "running")
TERMINAL = ("completed", "failed", "canceled")


@dataclass
class TaskCounts:
    """A task's items counted by status, with the frames they reached."""

    by_status: dict[str, int] = field(default_factory=dict)
    reported_frame: int | None = None  # the furthest frame any item reported
    completed_frame: int | None = None  # the last frame of the furthest completed item

    def add(self, status: str, n: int, frame: int | None, frame_end: int | None) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + n
        self.reported_frame = _max(self.reported_frame, frame)
        if status == "completed":
            self.completed_frame = _max(self.completed_frame, frame_end)

    def frame(self, previous: int | None) -> int | None:
        """The task's current frame: never backwards."""
        return _max(_max(self.reported_frame, self.completed_frame), previous)

    def __getitem__(self, status: str) -> int:
        return self.by_status.get(status, 0)


def derive_status(counts: TaskCounts, *, paused: bool, canceled: bool) -> str:
    total = sum(counts.by_status.values())
    if canceled:
        return "canceled"
    if counts["failed"]:
        return "failed"
    if total and counts["completed"] == total:
        return "completed"
    if paused:
        return "paused"
    if counts["running"]:
        return "rendering"
    if counts["assigned"]:
        return "assigned"
    return "queued"


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
