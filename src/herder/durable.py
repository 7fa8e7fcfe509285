"""Files that are either the old version or the new one after a crash, never half of each.

Records (the agent's processes and pools, the manager's signing keys) are written to a
temporary file in the same directory, fsynced, renamed over the old one, and the
directory is fsynced so that the rename itself survives a power loss.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_file(directory: Path, name: str, data: bytes) -> None:
    """Replace ``directory/name`` with ``data`` atomically (the directory is not synced)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)


def fsync_dir(directory: Path) -> None:
    """Make renames and unlinks in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
