"""Output capture: split a child's output into lines, keep the recent ones, write files.

One ``OutputLog`` per supervised process outlives its restarts, so an attached reader
sees one continuous stream. Each line goes to three places:

* a ring buffer of the last ``ring_lines`` lines (both streams, in arrival order), which
  a new attach replays first;
* a log file per stream (``<name>.out.log``, ``<name>.err.log``) rotated by size, so
  the files hold what the child wrote, byte for byte, whole lines only; unless the
  process asked for ``logs: "discard"`` (then no file is ever opened: ``NoFile``);
* every subscriber's own bounded queue. A subscriber that does not keep up loses its
  oldest lines (and is told how many), so it never stalls the child, the agent or the
  other subscribers.

Lines are kept as bytes; decoding happens only when someone reads them.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# A line longer than this without a newline is cut into pieces of this size, so one
# child cannot make the agent buffer without bound.
MAX_LINE_BYTES = 64 * 1024
# What a new attach replays; about 100 KiB for typical 100-byte lines.
DEFAULT_RING_LINES = 1000
# Per-file size before rotation, and how many rotated files to keep (like supervisord).
DEFAULT_FILE_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_FILE_BACKUPS = 3
# How many lines a subscriber may fall behind before it loses the oldest.
DEFAULT_SUBSCRIBER_LINES = 10_000


def _private(path: str, flags: int) -> int:
    """``open``'s opener for files only the agent's user may read."""
    return os.open(path, flags, 0o600)


class Stream(enum.StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"
    HERDER = "herder"  # the agent's own notes: restarts, stops, failures


Line = tuple[Stream, bytes]


class RotatingFile:
    """An append-only file that rotates to ``name.1``, ``name.2``... past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        # Opened on the first write: many processes never write to one of their streams,
        # and an open costs more than the rest of a process's creation.
        self._fh: BinaryIO | None = None
        self._size = 0

    def _open(self) -> BinaryIO:
        # 0600 whatever the umask: a process's output may hold anything it prints (#12 §4).
        fh = open(self.path, "ab", opener=_private)  # noqa: SIM115 - closed by close() or _rotate()
        self._size = fh.tell()
        self._fh = fh
        return fh

    def write(self, data: bytes) -> None:
        """Append ``data`` (whole lines) and rotate once past the limit."""
        fh = self._fh or self._open()
        fh.write(data)
        self._size += len(data)
        if self._size >= self.max_bytes:
            self._rotate()

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def _rotate(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for n in range(self.backups, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{n - 1}" if n > 1 else self.path.name)
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{n}"))
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        self._size = 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class NoFile:
    """Where output goes with ``logs: "discard"``: nowhere, and no file is made."""

    def __init__(self, path: Path) -> None:
        self.path = path  # where it would be: a reader finds nothing there

    def write(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class SubscriberStatistics:
    queued: int
    dropped: int


class Subscriber:
    """One reader's view of the live lines: a bounded queue that drops its oldest."""

    def __init__(self, max_lines: int) -> None:
        self._lines: collections.deque[Line] = collections.deque(maxlen=max_lines)
        self._wakeup = asyncio.Event()
        self._dropped = 0
        self._closed = False

    def push(self, lines: Sequence[Line]) -> None:
        before = len(self._lines)
        self._lines.extend(lines)
        overflow = before + len(lines) - len(self._lines)
        if overflow > 0:
            self._dropped += overflow
        self._wakeup.set()

    def close(self) -> None:
        """No more lines will come; ``get_batch`` returns what is left, then None."""
        self._closed = True
        self._wakeup.set()

    async def get_batch(self) -> tuple[list[Line], int] | None:
        """Wait for lines; return them with the count dropped since the last call.

        Returns None once the subscriber is closed and empty.
        """
        while not self._lines and not self._dropped:
            if self._closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        batch = list(self._lines)
        self._lines.clear()
        dropped, self._dropped = self._dropped, 0
        return batch, dropped

    def statistics(self) -> SubscriberStatistics:
        return SubscriberStatistics(queued=len(self._lines), dropped=self._dropped)


class OutputLog:
    """The output of one supervised process: ring buffer, files and subscribers.

    ``directory`` must exist; the files in it are created on their first line. With
    ``files=False`` (``logs: "discard"``) there are none: the ring and the subscribers
    still get every line.
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        ring_lines: int = DEFAULT_RING_LINES,
        file_max_bytes: int = DEFAULT_FILE_MAX_BYTES,
        file_backups: int = DEFAULT_FILE_BACKUPS,
        subscriber_lines: int = DEFAULT_SUBSCRIBER_LINES,
        files: bool = True,
    ) -> None:
        self.ring: collections.deque[Line] = collections.deque(maxlen=ring_lines)
        out, err = directory / f"{name}.out.log", directory / f"{name}.err.log"
        self._files: dict[Stream, RotatingFile | NoFile] = (
            {
                Stream.STDOUT: RotatingFile(out, file_max_bytes, file_backups),
                Stream.STDERR: RotatingFile(err, file_max_bytes, file_backups),
            }
            if files
            else {Stream.STDOUT: NoFile(out), Stream.STDERR: NoFile(err)}
        )
        self._partial: dict[Stream, bytes] = {Stream.STDOUT: b"", Stream.STDERR: b""}
        self._subscribers: set[Subscriber] = set()
        self._subscriber_lines = subscriber_lines
        self.lines_total = 0

    def path(self, stream: Stream) -> Path:
        return self._files[stream].path

    def feed(self, stream: Stream, data: bytes) -> None:
        """Take a chunk read from ``stream``; complete lines are stored, the rest waits."""
        pending = self._partial[stream] + data if self._partial[stream] else data
        cut = pending.rfind(b"\n")
        count = 0
        if cut < 0:
            lines, rest = [], pending
        else:
            count = pending.count(b"\n", 0, cut + 1)
            lines, rest = self._lines_worth_keeping(pending, cut, count), pending[cut + 1 :]
            self._files[stream].write(pending[: cut + 1])
        if len(rest) >= MAX_LINE_BYTES:
            # No newline in sight: emit whole pieces, keep the remainder waiting.
            full = len(rest) - len(rest) % MAX_LINE_BYTES
            pieces = [rest[i : i + MAX_LINE_BYTES] for i in range(0, full, MAX_LINE_BYTES)]
            self._files[stream].write(b"\n".join(pieces) + b"\n")
            lines.extend(pieces)
            count += len(pieces)
            rest = rest[full:]
        self._partial[stream] = rest
        if count:
            self._store(stream, lines, count)

    def _lines_worth_keeping(self, pending: bytes, cut: int, count: int) -> list[bytes]:
        """The complete lines of ``pending[:cut]`` that anyone will see.

        With nobody attached, only the ring's newest lines survive: splitting a bulk
        writer's megabyte into a hundred thousand line objects to keep a thousand was
        most of the agent's work, so only the tail is split.
        """
        keep = self.ring.maxlen or 0
        if self._subscribers or count <= keep:
            return pending[:cut].split(b"\n")
        start = cut
        for _ in range(keep):
            start = pending.rfind(b"\n", 0, start)
        return pending[start + 1 : cut].split(b"\n") if keep else []

    def flush_partial(self) -> None:
        """The child ended: a last line without a newline still counts as a line."""
        for stream, rest in list(self._partial.items()):
            if rest:
                self._partial[stream] = b""
                self._files[stream].write(rest + b"\n")
                self._store(stream, [rest], 1)
        self.flush()

    def note(self, text: str) -> None:
        """Add a line of the agent's own: stream ``herder``; in the stderr file as ``[herder] ...``."""
        line = text.encode()
        self._files[Stream.STDERR].write(b"[herder] " + line + b"\n")
        self._store(Stream.HERDER, [line], 1)

    def _store(self, stream: Stream, lines: list[bytes], count: int) -> None:
        """Keep ``lines`` (the newest of ``count`` new lines) in the ring and queues."""
        self.lines_total += count
        # Only the newest lines can survive in the ring; tagging the others is wasted work
        # (a bulk writer delivers thousands of lines per read).
        keep = self.ring.maxlen or 0
        self.ring.extend([(stream, line) for line in lines[-keep:]] if keep else ())
        if self._subscribers:
            tagged = [(stream, line) for line in lines]
            for sub in self._subscribers:
                sub.push(tagged)

    def flush(self) -> None:
        for fh in self._files.values():
            fh.flush()

    def subscribe(self, replay: bool = True) -> Subscriber:
        """A new reader: it gets the ring's lines first (if ``replay``), then live ones."""
        sub = Subscriber(max(self._subscriber_lines, len(self.ring)))
        if replay:
            sub.push(list(self.ring))
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        sub.close()

    def close(self) -> None:
        """Flush and close the files and end every subscriber's stream."""
        self.flush_partial()
        for fh in self._files.values():
            fh.close()
        for sub in list(self._subscribers):
            self.unsubscribe(sub)
