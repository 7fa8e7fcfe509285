"""What the agent was asked to run, recorded in its data dir so it survives restarts.

One JSON file per process, ``<data dir>/processes/<slug>.json``, written atomically
(temporary file, fsync, rename, fsync of the directory): after a crash a record is
either the old one or the new one, never half of each. A record that cannot be read
is moved aside as ``.bad`` with a warning rather than stopping the agent.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from herder.agent.models import ProcessSpec

log = logging.getLogger(__name__)


class RecordStore:
    """Reads and writes process records."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, slug: str) -> Path:
        return self._dir / f"{slug}.json"

    def save(self, current: Callable[[], ProcessSpec | None]) -> None:
        """Write durably the spec ``current()`` returns, unless it returns None.

        ``current`` is called under the store's lock, so when saves race (from the
        event loop and from threads) the last one writes the newest spec, and a save
        that lost the race to a ``remove`` writes nothing.
        """
        with self._lock:
            spec = current()
            if spec is None:
                return
            path = self._path(spec.slug)
            fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=f".{spec.slug}.", suffix=".tmp")
            try:
                os.write(fd, spec.model_dump_json(indent=2).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            self._fsync_dir()

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
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
