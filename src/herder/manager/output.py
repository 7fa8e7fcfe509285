"""Work items' output as linked agents send it: kept (bounded) for the log, live readers, parsers.

Lines arrive over the agents' link (``output`` notifications, see ``agents.py``) and
live only in this manager's memory: they are not in the database, and a manager that
starts again has none. They are kept for ``GET /tasks/{id}/log`` and for the replay
of ``WS /tasks/{id}/log``, and handed at once to that route's live readers.

What is kept is bounded three ways, so that a manager running for months holds no more
than a fixed amount:

* the last ``KEPT_LINES`` lines of each work item (all its attempts together);
* at most ``MAX_KEPT_ITEMS`` work items and ``MAX_KEPT_LINES`` lines in all: past
  either, the item written to longest ago is dropped first;
* when a task ends (its last report, a cancel), its items' lines are kept for the log of
  the last ``ENDED_TASKS_KEPT`` ended tasks only, and dropped after; a deleted task's
  are dropped at once. A task that ended out of this manager's sight (another manager,
  the lease keeper) is not known to have ended: its lines go by the bounds above.

Each running attempt's output also runs through its task's parser (one instance per
attempt, as parsers keep state), which reports the progress the lines show.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from herder.manager.tasktypes import Parser, load_parser

log = logging.getLogger(__name__)

# Per work item: what `GET /tasks/{id}/log` shows (docs/manager.md, "Output").
KEPT_LINES = 2000
# In all: ~100 bytes a line puts the whole store near 100 MB at most.
MAX_KEPT_ITEMS = 4096
MAX_KEPT_LINES = 1_000_000
# Ended tasks whose output stays readable: the log asked right after the end still answers.
ENDED_TASKS_KEPT = 100
# A live reader this far behind loses lines, not the manager's memory.
READER_BACKLOG_LINES = 2000

Line = tuple[int, str, str]
"""A kept line: (attempt, stream, text)."""
LiveLine = tuple[int, int, str, str]
"""A line for a live reader: (item, attempt, stream, text); ``None`` on its queue ends it."""
Reader = asyncio.Queue[LiveLine | None]


class ParserNames(Protocol):
    """Where the name of a work item's parser is looked up (the database)."""

    async def parser_of_item(self, item_id: int) -> str | None:
        """The parser its task names; None: no such item."""
        ...


@dataclass(frozen=True)
class Progress:
    """What a batch of lines said about progress (None: nothing new)."""

    frame: int | None = None
    percent: float | None = None


@dataclass(frozen=True)
class OutputStatistics:
    """What ``Output`` holds now."""

    items: int
    lines: int
    ended_tasks: int
    readers: int
    parsers: int


class Output:
    """The output kept per work item, its live readers and the parsers of running attempts."""

    def __init__(
        self,
        parser_names: ParserNames,
        *,
        kept_lines: int = KEPT_LINES,
        max_items: int = MAX_KEPT_ITEMS,
        max_lines: int = MAX_KEPT_LINES,
        ended_tasks_kept: int = ENDED_TASKS_KEPT,
    ) -> None:
        self._parser_names = parser_names
        self._kept_lines = kept_lines
        self._max_items = max_items
        self._max_lines = max_lines
        self._ended_tasks_kept = ended_tasks_kept
        # Item -> its last lines; in the order written to, the oldest first.
        self._kept: collections.OrderedDict[int, collections.deque[Line]] = collections.OrderedDict()
        self._line_count = 0
        self._item_task: dict[int, int] = {}
        self._task_items: dict[int, set[int]] = {}
        self._ended: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._readers: dict[int, set[Reader]] = {}
        self._parsers: dict[tuple[int, int], Parser] = {}

    # -- what the link reports ----------------------------------------------------------------

    def assigned(self, item_id: int, task_id: int) -> None:
        """A work item was handed out: its lines belong to ``task_id``'s log and readers."""
        self._item_task[item_id] = task_id
        self._task_items.setdefault(task_id, set()).add(item_id)

    def started(self, item_id: int, attempt: int, parser_name: str) -> None:
        """An attempt started: its lines run through a new ``parser_name``."""
        self._parsers[(item_id, attempt)] = load_parser(parser_name)

    def attempt_ended(self, item_id: int, attempt: int) -> None:
        """An attempt was reported finished: its parser is done."""
        self._parsers.pop((item_id, attempt), None)

    async def add(self, item_id: int, attempt: int, lines: Iterable[Sequence[str]]) -> Progress | None:
        """Keep an attempt's lines ``[stream, text]``, hand them to live readers; the progress they show."""
        batch = [(stream, text) for stream, text in lines]
        task_id = self._item_task.get(item_id)
        for reader in self._readers.get(task_id, ()) if task_id is not None else ():
            for stream, text in batch:
                if reader.qsize() < READER_BACKLOG_LINES:
                    reader.put_nowait((item_id, attempt, stream, text))
        self._keep(item_id, [(attempt, stream, text) for stream, text in batch])
        parser = self._parsers.get((item_id, attempt)) or await self._load_parser(item_id, attempt)
        if parser is None:
            return None
        frame: int | None = None
        percent: float | None = None
        for _, text in batch:
            progress = parser.parse(text)
            if progress is not None:
                frame = progress.frame if progress.frame is not None else frame
                percent = progress.percent if progress.percent is not None else percent
        if frame is None and percent is None:
            return None
        return Progress(frame, percent)

    async def _load_parser(self, item_id: int, attempt: int) -> Parser | None:
        """The parser of an attempt whose output came before (or without) its start report."""
        name = await self._parser_names.parser_of_item(item_id)
        if name is None:
            return None
        parser = self._parsers[(item_id, attempt)] = load_parser(name)
        return parser

    def _keep(self, item_id: int, lines: list[Line]) -> None:
        kept = self._kept.get(item_id)
        if kept is None:
            kept = self._kept[item_id] = collections.deque(maxlen=self._kept_lines)
        else:
            self._kept.move_to_end(item_id)
        before = len(kept)
        kept.extend(lines)
        self._line_count += len(kept) - before
        while len(self._kept) > self._max_items or self._line_count > self._max_lines:
            oldest, _ = next(iter(self._kept.items()))
            if oldest == item_id:
                break  # the item written now is the only one left
            self._drop_item(oldest)

    def _drop_item(self, item_id: int) -> None:
        kept = self._kept.pop(item_id, None)
        if kept is not None:
            self._line_count -= len(kept)
        task_id = self._item_task.pop(item_id, None)
        if task_id is not None:
            items = self._task_items.get(task_id)
            if items is not None:
                items.discard(item_id)
                if not items:
                    del self._task_items[task_id]

    # -- tasks ending -------------------------------------------------------------------------

    def task_ended(self, task_id: int) -> None:
        """The task has ended: its live readers have read everything; its lines go in time."""
        self._end_readers(task_id)
        self._forget_parsers(task_id)
        self._ended[task_id] = None
        self._ended.move_to_end(task_id)
        while len(self._ended) > self._ended_tasks_kept:
            oldest, _ = self._ended.popitem(last=False)
            self._drop_task(oldest)

    def task_deleted(self, task_id: int) -> None:
        """The task is gone: readers ended, and its lines dropped now."""
        self._end_readers(task_id)
        self._forget_parsers(task_id)
        self._ended.pop(task_id, None)
        self._drop_task(task_id)

    def _end_readers(self, task_id: int) -> None:
        for reader in self._readers.get(task_id, ()):
            reader.put_nowait(None)

    def _forget_parsers(self, task_id: int) -> None:
        items = self._task_items.get(task_id, set())
        for key in [key for key in self._parsers if key[0] in items]:
            del self._parsers[key]

    def _drop_task(self, task_id: int) -> None:
        for item_id in list(self._task_items.get(task_id, ())):
            self._drop_item(item_id)
        self._task_items.pop(task_id, None)

    # -- readers ------------------------------------------------------------------------------

    def lines(self, item_id: int) -> list[Line]:
        """The lines kept for a work item, oldest first (none: never seen, or dropped)."""
        return list(self._kept.get(item_id, ()))

    def subscribe(self, task_id: int) -> Reader:
        """A queue of the task's lines from now on; ``None`` on it means the task ended."""
        reader: Reader = asyncio.Queue()
        self._readers.setdefault(task_id, set()).add(reader)
        return reader

    def unsubscribe(self, task_id: int, reader: Reader) -> None:
        readers = self._readers.get(task_id)
        if readers is not None:
            readers.discard(reader)
            if not readers:
                del self._readers[task_id]

    def statistics(self) -> OutputStatistics:
        return OutputStatistics(
            items=len(self._kept),
            lines=self._line_count,
            ended_tasks=len(self._ended),
            readers=sum(len(r) for r in self._readers.values()),
            parsers=len(self._parsers),
        )


__all__ = ["Output", "OutputStatistics", "ParserNames", "Progress"]
