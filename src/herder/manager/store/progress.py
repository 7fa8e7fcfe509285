"""How far tasks got, measured from their work items in one aggregate (the dashboard's feed).

A task's own ``frame_current`` is the furthest frame any of its items reached: with
items running side by side on several workers it runs ahead of the work done. What the
dashboard shows is counted from the items instead.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select

from herder.manager.states import ItemStatus
from herder.manager.store.tables import WorkItem


async def progress_of(db: Any, task_ids: list[int]) -> dict[int, float]:
    """How far each task's work got, in percent, from its items in one aggregate.

    Frames done of all its frames (a completed item counts its range, a running one up
    to its current frame); for items without frames, each counts as a whole when
    completed and by its parser's last ``percent`` while it runs (the ``percent``
    parser's ``N%``; 0 before any), so a single long command moves too. The task's own
    ``frame_current`` is the furthest frame any item reached: with items running side by
    side it runs ahead of the work done.
    """
    size = WorkItem.frame_end - WorkItem.frame_start + 1
    reached = WorkItem.frame_current - WorkItem.frame_start + 1
    completed = WorkItem.status == ItemStatus.COMPLETED
    # An item without frames: 1 done, else its parser's percent as a share (clamped: a
    # report is validated 0..100, but a row is not).
    share_done = case(
        (completed, 1.0),
        (WorkItem.percent.is_(None), 0.0),
        (WorkItem.percent > 100, 1.0),
        (WorkItem.percent < 0, 0.0),
        else_=WorkItem.percent / 100.0,
    )
    frames_done = case(
        (completed, size),
        (WorkItem.frame_current.is_(None), 0),
        (reached > size, size),
        (reached < 0, 0),
        else_=reached,
    )
    query = (
        select(
            WorkItem.task_id,
            func.sum(frames_done),
            func.sum(size),
            func.sum(share_done),
            func.count(),
        )
        .where(WorkItem.task_id.in_(task_ids))
        .group_by(WorkItem.task_id)
    )
    progress = {}
    for task_id, frames, all_frames, items_done, items in (await db.execute(query)).all():
        if all_frames:  # null when no item has frames (a command's)
            progress[task_id] = 100.0 * float(frames) / float(all_frames)
        elif items:
            progress[task_id] = 100.0 * float(items_done) / items
    return progress


__all__ = ["progress_of"]
