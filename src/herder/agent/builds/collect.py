"""Collecting builds no process has used for a while (``[builds] keep_unused_s``).

A build's last use is the newest mtime of its ``used`` file (touched when a process
takes the build and when it lets go of it), ``done`` or ``failed``. Those older than the
limit, and builds interrupted long ago (no marker), are candidates; the caller (in the
event loop) skips the ones in use or being built and moves the rest aside
(``.trash-<key>``, one rename each) before they are deleted in a thread, so that no
process can take a build that is being deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{64}$")
TRASH = ".trash-"
MARKERS = ("used", "done", "failed")


def last_use(build_dir: Path) -> float:
    """When the build was last used, made or tried (the directory's own mtime if none)."""
    times = []
    for marker in MARKERS:
        try:
            times.append((build_dir / marker).stat().st_mtime)
        except FileNotFoundError:
            continue
    return max(times) if times else build_dir.stat().st_mtime


def stale(root: Path, before: float) -> list[str]:
    """The keys of builds last used before ``before`` (seconds since the epoch)."""
    found = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not _KEY.match(entry.name):
            continue
        try:
            if last_use(Path(entry.path)) < before:
                found.append(entry.name)
        except FileNotFoundError:
            continue
    return found


def empty_trash(root: Path) -> None:
    """Delete the builds moved aside (and any an interrupted collection left)."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith(TRASH):
            shutil.rmtree(entry.path, ignore_errors=True)


def touch(build_dir: Path) -> None:
    """Mark the build used now (nothing to mark if it was collected or never made)."""
    with contextlib.suppress(FileNotFoundError):
        (build_dir / "used").touch()
