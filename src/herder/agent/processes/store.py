"""What the agent was asked to run, recorded in its data dir so it survives restarts.

One JSON file per process, ``<data dir>/processes/<slug>.json``, written atomically
(temporary file, fsync, rename, fsync of the directory): after a crash a record is
either the old one or the new one, never half of each. A record that cannot be read
is moved aside as ``.bad`` with a warning rather than stopping the agent.

The records of one batch are written at once, each from a thread of its own: on ext4 each
file's fsync is a journal commit, and commits made one after another are paid one after
another (13 ms for 4 records on the 2-core VM of ``bench/README.md``, issue 19), while
fsyncs made at the same time share one (2.4 ms).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from pydantic import ValidationError

from herder import groupcommit
from herder.agent.models import ProcessSpec
from herder.durable import fsync_dir, write_file

log = logging.getLogger(__name__)

Save = tuple[str, Callable[[], ProcessSpec | None]]  # (key, what to write when the batch is written)

# Records of one batch written at once; more than this wait for a free thread. The kernel
# folds the fsyncs in flight together into one journal commit, so a few are enough.
PARALLEL_WRITES = 8
_writers: ThreadPoolExecutor | None = None
_writers_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The threads that write a batch's records (one set per process, made on first use)."""
    global _writers
    with _writers_lock:
        if _writers is None:
            _writers = ThreadPoolExecutor(PARALLEL_WRITES, thread_name_prefix="records")
        return _writers


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
        that lost the race to a ``remove`` writes nothing. The files are written at
        once (see the module's docstring), and the directory is synced once for the
        whole batch, after every file of it is written.

        Raises:
            OSError: a record could not be written (the first failure; every write of
                the batch has ended by then, so none lands after a later ``remove``).
        """
        with self._lock:
            specs = [spec for get in current if (spec := get()) is not None]
            if not specs:
                return
            if len(specs) == 1:
                self._write(specs[0])
            else:
                writes: list[Future[None]] = [_pool().submit(self._write, spec) for spec in specs]
                wait(writes)
                for write in writes:
                    write.result()
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

    Built on ``herder.groupcommit``: a save that arrives while a batch is being written
    joins the next one, and the whole batch is written by ``RecordStore.save`` in a
    thread, with one directory sync. Under a burst of creates this turns one directory
    sync per process into one per batch.
    Saves of one key in the same batch are written once, with the newest ``current``.
    """

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._commit: groupcommit.GroupCommit[Save, None] = groupcommit.GroupCommit("records", self._flush)

    async def save(self, key: str, current: Callable[[], ProcessSpec | None]) -> None:
        """Return once ``current()``'s spec is durably written (or skipped as None).

        Raises:
            OSError: the batch holding it could not be written.
        """
        await self._commit.submit((key, current))

    async def wait_idle(self) -> None:
        """Return once no batch of records is being written (the supervisor is stopping)."""
        await self._commit.wait_idle()

    async def _flush(self, saves: list[Save]) -> list[None]:
        newest = dict(saves)  # one write per key: the last save's ``current`` wins
        await asyncio.to_thread(self._store.save, *newest.values())
        return [None] * len(saves)
