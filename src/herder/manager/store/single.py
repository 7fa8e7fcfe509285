"""One manager per SQLite file (#17): a second one exits at start, saying why.

Several managers share state only through PostgreSQL (its ``LISTEN/NOTIFY`` keeps their
indexes current); two on one SQLite file would each believe itself alone (each drops
the other's link-held registrations at start) and fight for the file's one writer.

The guard is an exclusive ``flock`` on a file next to the database (``<db>.manager``),
held by the manager's process for as long as it runs. The kernel releases it when the
process ends however it ends (SIGKILL, a crash, the host's reboot): a manager that died
never keeps the next one out, and there is no stale record to judge or expire. The file
holds the holder's pid, only to name it in the refusal. Tools that work on the file while
a manager runs (``herder keys``) do not take it: they are not managers.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from herder.manager.errors import StartupError

SUFFIX = ".manager"


class SqliteGuard:
    """The lock a manager holds on its SQLite file; ``release`` lets the next one in."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + SUFFIX)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or refuse to start.

        Raises:
            StartupError: another manager's process holds it (one line, naming the file,
                that process, and PostgreSQL as the way to run several).
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StartupError(f"cannot create the lock file {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"(pid {holder}) " if holder else ""
            raise StartupError(
                f"another manager {who}runs on the SQLite database {self.database}: "
                "one SQLite file serves one manager; several managers require PostgreSQL "
                "(--db postgresql://...)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the next manager in (closing the file drops the lock). Idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


__all__ = ["SUFFIX", "SqliteGuard"]
