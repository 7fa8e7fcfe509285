"""Work items' output as linked agents send it: kept (bounded) while live, readers, parsers.

Lines arrive over the agents' link (``output`` notifications, see ``agents.py``). While
its work item is live (queued again, assigned, running) what is kept of them is in this
manager's memory, for ``GET /tasks/{id}/log``, the replay of ``WS /tasks/{id}/log`` and
the route's live readers, who get each line at once.

When the item ends, its lines move to the database (``store.logs``) and leave the memory
at once (``item_ended``): the log of an ended item is read from there, after a restart
too. Its finished report carries them (``final_log``) into the report's own round; a
cancel writes them in its transaction; items ended by their task's end rather than by a
report of theirs are moved by ``move_ended``. Lines that come for an item after its end
(a late batch of a canceled attempt) are dropped.

What is kept of live items is bounded three ways, so that a manager running for months
holds no more than a fixed amount:

* the last ``KEPT_LINES`` lines of each work item (all its attempts together);
* at most ``MAX_KEPT_ITEMS`` work items and ``MAX_KEPT_LINES`` lines in all: past
  either, the item written to longest ago is dropped first (its lines are lost: it did
  not end in this manager's sight, or wrote nothing for long).

Each line a live reader gets is numbered within its item (``seq``, ``LiveLine``), so a log
stream sends each line once and in order whatever the sources it joins (``outputshare``).
With several managers on one PostgreSQL, the lines of the tasks another manager's readers
follow are handed to ``tap`` too, which forwards them there (``outputshare.OutputShare``).

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

from herder.manager.store.logs import FinalLog, Line
from herder.manager.tasktypes import Parser, load_parser

log = logging.getLogger(__name__)

# Per work item: what `GET /tasks/{id}/log` shows (docs/manager.md, "Output").
KEPT_LINES = 2000
# In all: ~100 bytes a line puts the whole store near 100 MB at most.
MAX_KEPT_ITEMS = 4096
MAX_KEPT_LINES = 1_000_000
# Ended items remembered (their ids only) so that late lines for them are dropped.
ENDED_ITEMS_REMEMBERED = 4096
# A live reader this far behind loses lines, not the manager's memory.
READER_BACKLOG_LINES = 2000

LiveLine = tuple[int, int, str, str, int]
"""A line for a live reader: (item, attempt, stream, text, seq); ``None`` on its queue ends it.

``seq`` numbers an item's lines from 0 (all its attempts together, kept or dropped by the
bound): a reader sees what it already has, and what it missed (``outputshare``)."""
Reader = asyncio.Queue[LiveLine | None]


def offer(reader: Reader, line: LiveLine) -> None:
    """Queue a line for a live reader, unless it is ``READER_BACKLOG_LINES`` behind (the
    reader sees the gap in the lines' ``seq`` and says so)."""
    if reader.qsize() < READER_BACKLOG_LINES:
        reader.put_nowait(line)


class Tap(Protocol):
    """Who else gets each batch of lines: the managers following the task (``outputshare``)."""

    def lines(
        self, task_id: int | None, item_id: int, seq: int, attempt: int, batch: Sequence[Sequence[str]]
    ) -> None: ...


class ParserNames(Protocol):
    """Where the name of a work item's parser is looked up (the database)."""

    async def parser_of_item(self, item_id: int) -> str | None:
        """The parser its task names; None: no such item."""
        ...


class EndedLogs(Protocol):
    """Where ended items' output is stored (the database: ``store.logs.keep_ended``)."""

    async def keep_ended_logs(self, logs: list[FinalLog]) -> list[int]:
        """Store the output of those of these items that have ended; their ids."""
        ...


@dataclass(frozen=True)
class Progress:
    """What a batch of lines said about progress (None: nothing new)."""

    frame: int | None = None
    percent: float | None = None


@dataclass(frozen=True)
class OutputStatistics:
    """What ``Output`` holds now."""

    items: int  # live items with lines kept
    lines: int
    readers: int
    parsers: int


class Output:
    """The output kept per work item, its live readers and the parsers of running attempts."""

    def __init__(
        self,
        parser_names: ParserNames,
        ended_logs: EndedLogs | None = None,
        *,
        kept_lines: int = KEPT_LINES,
        max_items: int = MAX_KEPT_ITEMS,
        max_lines: int = MAX_KEPT_LINES,
    ) -> None:
        """``ended_logs`` None: no database (a test's); ``move_ended`` then moves nothing."""
        self._parser_names = parser_names
        self._ended_logs = ended_logs
        self._kept_lines = kept_lines
        self._max_items = max_items
        self._max_lines = max_lines
        # Item -> its last lines; in the order written to, the oldest first.
        self._kept: collections.OrderedDict[int, collections.deque[Line]] = collections.OrderedDict()
        self._truncated: dict[int, int] = {}  # item -> older lines its bound dropped
        self._line_count = 0
        self._item_task: dict[int, int] = {}
        self._task_items: dict[int, set[int]] = {}
        self._ended_items: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._readers: dict[int, set[Reader]] = {}
        self._parsers: dict[tuple[int, int], Parser] = {}
        self.tap: Tap | None = None  # set once the share between managers is built

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
        if item_id in self._ended_items:
            return None  # a late batch: the item's log is stored already
        batch = [(stream, text) for stream, text in lines]
        task_id = self._item_task.get(item_id)
        seq = self._written(item_id)
        for reader in self._readers.get(task_id, ()) if task_id is not None else ():
            for n, (stream, text) in enumerate(batch):
                offer(reader, (item_id, attempt, stream, text, seq + n))
        if self.tap is not None:
            self.tap.lines(task_id, item_id, seq, attempt, batch)
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
        parser = load_parser(name)
        if item_id not in self._ended_items:  # it may have ended while its task's parser was read
            self._parsers[(item_id, attempt)] = parser
        return parser

    def _written(self, item_id: int) -> int:
        """How many lines the item wrote so far (the ``seq`` of its next line)."""
        return self._truncated.get(item_id, 0) + len(self._kept.get(item_id, ()))

    def _keep(self, item_id: int, lines: list[Line]) -> None:
        kept = self._kept.get(item_id)
        if kept is None:
            kept = self._kept[item_id] = collections.deque(maxlen=self._kept_lines)
        else:
            self._kept.move_to_end(item_id)
        before = len(kept)
        kept.extend(lines)
        self._line_count += len(kept) - before
        dropped = before + len(lines) - len(kept)
        if dropped:
            self._truncated[item_id] = self._truncated.get(item_id, 0) + dropped
        while len(self._kept) > self._max_items or self._line_count > self._max_lines:
            oldest, _ = next(iter(self._kept.items()))
            if oldest == item_id:
                break  # the item written now is the only one left
            self._drop_item(oldest)

    def _drop_item(self, item_id: int) -> None:
        kept = self._kept.pop(item_id, None)
        if kept is not None:
            self._line_count -= len(kept)
        self._truncated.pop(item_id, None)
        task_id = self._item_task.pop(item_id, None)
        if task_id is not None:
            items = self._task_items.get(task_id)
            if items is not None:
                items.discard(item_id)
                if not items:
                    del self._task_items[task_id]

    # -- work ending --------------------------------------------------------------------------

    def final_log(self, item_id: int) -> FinalLog | None:
        """What is kept of an item's output, to be stored at its end; None: nothing kept."""
        kept = self._kept.get(item_id)
        if not kept:
            return None
        lines = tuple(kept)
        return FinalLog(item_id, lines[-1][0], lines, self._truncated.get(item_id, 0))

    def final_logs(self, item_ids: Iterable[int]) -> list[FinalLog]:
        """``final_log`` of each of these items that has output."""
        return [log for log in map(self.final_log, item_ids) if log is not None]

    def item_ended(self, item_id: int) -> None:
        """The item ended and its output is stored: its lines and parsers go now."""
        self._drop_item(item_id)
        for key in [key for key in self._parsers if key[0] == item_id]:
            del self._parsers[key]
        self._ended_items[item_id] = None
        self._ended_items.move_to_end(item_id)
        while len(self._ended_items) > ENDED_ITEMS_REMEMBERED:
            self._ended_items.popitem(last=False)

    def items_of(self, task_id: int) -> list[int]:
        """The task's items whose lines are kept here (those handed out by this manager)."""
        return sorted(self._task_items.get(task_id, ()))

    async def move_ended(self, task_id: int) -> None:
        """The task ended: store and let go of its items that ended without a report of theirs.

        A task that failed cancels its queued items, whose earlier attempts may have
        written; its items still running keep their lines until their own end. Without
        ``ended_logs`` (no database) the ended are not known: nothing moves.
        """
        await self.move_items_ended(self.items_of(task_id))

    async def move_items_ended(self, item_ids: Iterable[int]) -> None:
        """Store and let go of the lines of those of these items that have ended.

        Also for items another manager ended (a cancel through it, ``stops``): that one
        stored only the lines it kept itself, and the first stored wins, so these are
        stored only where it had none.
        """
        logs = self.final_logs(item_ids)
        if not logs or self._ended_logs is None:
            return
        for item_id in await self._ended_logs.keep_ended_logs(logs):
            self.item_ended(item_id)

    def task_ended(self, task_id: int) -> None:
        """The task has ended: its live readers have read everything; its parsers go."""
        self._end_readers(task_id)
        self._forget_parsers(task_id)

    def task_deleted(self, task_id: int) -> None:
        """The task is gone (its stored output with it): readers ended, its lines dropped now."""
        self._end_readers(task_id)
        self._forget_parsers(task_id)
        for item_id in self.items_of(task_id):
            self.item_ended(item_id)  # late lines for it are dropped too
        self._task_items.pop(task_id, None)

    def _end_readers(self, task_id: int) -> None:
        for reader in self._readers.get(task_id, ()):
            reader.put_nowait(None)

    def _forget_parsers(self, task_id: int) -> None:
        items = self._task_items.get(task_id, set())
        for key in [key for key in self._parsers if key[0] in items]:
            del self._parsers[key]

    # -- readers ------------------------------------------------------------------------------

    def lines(self, item_id: int) -> list[Line]:
        """The lines kept in memory for a live work item, oldest first (none: never seen,
        dropped, or ended: an ended item's are in the database, ``store.logs.lines_of``)."""
        return list(self._kept.get(item_id, ()))

    def kept(self, item_id: int) -> tuple[int, list[Line]]:
        """``lines``, with the ``seq`` of the first (the lines the bound dropped before it)."""
        return self._truncated.get(item_id, 0), self.lines(item_id)

    def holds(self, item_id: int) -> bool:
        """Whether the item's output comes here: handed out by this manager, or lines kept."""
        return item_id in self._item_task or item_id in self._kept

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
            readers=sum(len(r) for r in self._readers.values()),
            parsers=len(self._parsers),
        )


__all__ = [
    "EndedLogs",
    "LiveLine",
    "Output",
    "OutputStatistics",
    "ParserNames",
    "Progress",
    "Reader",
    "Tap",
    "offer",
]
