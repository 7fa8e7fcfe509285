"""Pools created through the API, recorded so that they survive an agent restart.

One JSON file per pool, ``<data dir>/pools/<name>.json``, written atomically (temporary
file, fsync, rename, directory fsync) like process records. Pools declared in the
config file are not recorded here: the file is their record.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import ValidationError

from herder.agent.router.models import PoolSpec
from herder.durable import fsync_dir, write_file

log = logging.getLogger(__name__)


class PoolStore:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def save(self, spec: PoolSpec) -> None:
        write_file(self._dir, f"{spec.name}.json", spec.model_dump_json(indent=2).encode())
        fsync_dir(self._dir)

    def remove(self, name: str) -> None:
        (self._dir / f"{name}.json").unlink(missing_ok=True)
        fsync_dir(self._dir)

    def load_all(self) -> list[PoolSpec]:
        """Every readable record; an unreadable one is moved aside as ``.bad``."""
        specs: list[PoolSpec] = []
        for path in sorted(self._dir.glob("*.json")):
            try:
                specs.append(PoolSpec.model_validate_json(path.read_bytes()))
            except (OSError, ValidationError) as exc:
                log.warning("pool record %s is unreadable (%s); moved aside as .bad", path, exc)
                os.replace(path, path.with_suffix(".bad"))
        return specs
