"""Ended work items' output in the database (``item_logs``): stored once, read by the log.

A live item's lines are kept in the manager's memory (``manager.output``); when the item
ends, what was kept of them moves here in one statement and leaves the memory. Where
the end is written decides where its log is written:

* a finished report that ends its item (completed, or failed after its last attempt):
  in the report's own round (``batch.finish``), so that a task seen completed has its
  log stored, and a task without output costs no statement;
* a cancel: in the cancel's transaction (``GET /tasks/{id}/log`` reads it at once);
* items ended by their task's end but not by a report of theirs (the queued items of a
  task that failed, work whose lease ran out): ``keep_ended``, in a transaction of its
  own right after, for those the database says have ended.

A deleted item's row goes with it (``ON DELETE CASCADE``; SQLite runs with foreign keys
on). Every function takes a connection or session inside a transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from herder.manager.states import TERMINAL
from herder.manager.store.tables import ItemLog, WorkItem

Line = tuple[int, str, str]
"""A kept line: (attempt, stream, text)."""


@dataclass(frozen=True)
class FinalLog:
    """A work item's kept output, as stored when the item ends (``tables.ItemLog``)."""

    item_id: int
    attempt: int  # the last attempt that wrote
    lines: tuple[Line, ...]  # oldest first
    truncated: int = 0  # older lines the per-item bound dropped

    def row(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "attempt": self.attempt,
            "lines": [list(line) for line in self.lines],
            "truncated": self.truncated,
        }


def keep_logs(conn: Connection, logs: Sequence[FinalLog]) -> None:
    """Store ended items' output, one statement for all (nothing for none).

    An item that has its row already keeps it: an item ends once, and the paths that
    store an ended item's output may cross (a report's round, and its task's end seen
    by another request); the first stored wins.
    """
    if logs:
        conn.execute(_insert(conn.dialect.name), [log.row() for log in logs])


def _insert(dialect: str) -> Any:
    """``INSERT INTO item_logs ... ON CONFLICT (item_id) DO NOTHING`` for this database."""
    insert_into = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert_into(ItemLog).on_conflict_do_nothing(index_elements=["item_id"])


async def keep(db: AsyncSession, logs: Sequence[FinalLog]) -> None:
    """``keep_logs`` in a session's transaction (a cancel's)."""
    if logs:
        conn = await db.connection()
        await conn.execute(_insert(conn.dialect.name), [log.row() for log in logs])


async def keep_ended(db: AsyncSession, logs: Sequence[FinalLog]) -> list[int]:
    """Store the output of those of these items that have ended; their ids.

    The others (still queued or running) are left out: their output is still live.
    """
    if not logs:
        return []
    ids = [log.item_id for log in logs]
    ended = set(
        await db.scalars(select(WorkItem.id).where(WorkItem.id.in_(ids), WorkItem.status.in_(TERMINAL)))
    )
    await keep(db, [log for log in logs if log.item_id in ended])
    return sorted(ended)


async def lines_of(db: AsyncSession, item_ids: Iterable[int]) -> dict[int, tuple[int, list[Line]]]:
    """The stored output of these items, by item (absent: none stored: live, or no output),
    each with the number of its first line in its item (``truncated``: the older lines
    the bound dropped), as live readers count them (``output.LiveLine``)."""
    ids = list(item_ids)
    if not ids:
        return {}
    query = select(ItemLog.item_id, ItemLog.truncated, ItemLog.lines).where(ItemLog.item_id.in_(ids))
    return {
        item_id: (int(truncated or 0), [(int(a), str(s), str(t)) for a, s, t in lines])
        for item_id, truncated, lines in await db.execute(query)
    }


__all__ = ["FinalLog", "Line", "keep", "keep_ended", "keep_logs", "lines_of"]
