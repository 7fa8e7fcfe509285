"""What the agent was asked to run, recorded in its data dir so it survives restarts.

One JSON file per process, ``<data dir>/processes/<slug>.json``, written atomically
(temporary file, fsync, rename, fsync of the directory): after a crash a record is
either the old one or the new one, never half of each. A record that cannot be read
is moved aside as ``.bad`` with a warning rather than stopping the agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from herder.agent.models import ProcessSpec
from herder.durable import fsync_dir, write_file

log = logging.getLogger(__name__)


class RecordStore:
    """Reads and writes process records."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, slug: str) -> Path:
        return self._dir / f"{slug}.json"

    def save(self, *current: Callable[[], ProcessSpec | None]) -> None:
        """Write durably the specs the ``current`` callables return (None: skip it).

        Each callable is called under the store's lock, so when saves race (from the
        event loop and from threads) the last one writes the newest spec, and a save
        that lost the race to a ``remove`` writes nothing. The directory is synced
        once for the whole batch.
        """
        with self._lock:
            written = 0
            for get in current:
                spec = get()
                if spec is not None:
                    self._write(spec)
                    written += 1
            if written:
                self._fsync_dir()

    def _write(self, spec: ProcessSpec) -> None:
        write_file(self._dir, f"{spec.slug}.json", spec.model_dump_json(indent=2).encode())

    def remove(self, slug: str) -> None:
        with self._lock:
            self._path(slug).unlink(missing_ok=True)
            self._fsync_dir()

    def load_all(self) -> list[ProcessSpec]:
        """Every readable record, oldest first."""
        specs: list[ProcessSpec] = []
        for path in sorted(self._dir.glob("*.json")):
            try:
                specs.append(ProcessSpec.model_validate_json(path.read_bytes()))
            except (OSError, ValidationError) as exc:
                log.warning("process record %s is unreadable (%s); moved aside as .bad", path, exc)
                os.replace(path, path.with_suffix(".bad"))
        specs.sort(key=lambda s: s.created_at)
        return specs

    def _fsync_dir(self) -> None:
        fsync_dir(self._dir)


class GroupCommit:
    """Batches saves from many coroutines into few writes, off the event loop.

    The first caller becomes the writer: it writes what is pending in a thread and
    goes on while more arrives; callers that come meanwhile join the next batch and
    wait for it. Under a burst of creates this turns one directory sync per process
    into one per batch, without a task of its own.
    """

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._pending: dict[str, Callable[[], ProcessSpec | None]] = {}
        self._next: asyncio.Future[None] | None = None
        self._writing = False

    async def save(self, key: str, current: Callable[[], ProcessSpec | None]) -> None:
        """Return once ``current()``'s spec is durably written (or skipped as None).

        Raises:
            OSError: the batch holding it could not be written.
        """
        self._pending[key] = current
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        mine = self._next
        if not self._writing:
            await self._write_until_empty()
        await mine

    async def _write_until_empty(self) -> None:
        self._writing = True
        try:
            while self._pending:
                batch, done = list(self._pending.values()), self._next
                assert done is not None  # set with every pending entry
                self._pending, self._next = {}, None
                writing = asyncio.ensure_future(asyncio.to_thread(self._store.save, *batch))
                try:
                    await asyncio.shield(writing)
                except asyncio.CancelledError:
                    _settle(done, await asyncio.gather(writing, return_exceptions=True))
                    raise
                except OSError as exc:
                    _settle(done, [exc])
                else:
                    _settle(done, [None])
        finally:
            self._writing = False


def _settle(future: asyncio.Future[None], outcome: Sequence[BaseException | None]) -> None:
    error = outcome[0]
    if isinstance(error, BaseException):
        future.set_exception(error)
        future.exception()  # waiters re-raise it; nobody must be warned it went unseen
    else:
        future.set_result(None)
