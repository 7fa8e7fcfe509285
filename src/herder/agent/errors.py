"""The agent's errors.

Hierarchy::

    AgentError                  base of everything the agent raises on purpose
    ├── ConfigError             the agent cannot start as configured (exit 2)
    ├── DataDirBusy             another agent holds the data dir's lock
    ├── NotFound                no process with that slug (HTTP 404)
    ├── Conflict                a process with that slug exists (HTTP 409)
    └── AppError                the app cannot run; the process goes to ``failed``
        ├── FetchError          the download failed (transient ones are retried)
        ├── UnsafeArchive       an archive breaks a safety rule or a limit
        ├── BuildError          the app's build failed (or failed before: not tried again)
        └── ProcfileError       no Procfile, a garbage line, an unknown process type

Each error's message is written for the user who sent the request: it says what is
wrong and, where it helps, what to do.
"""

from __future__ import annotations

from pathlib import Path


class AgentError(Exception):
    """Base of the agent's own errors."""


class ConfigError(AgentError):
    """The agent cannot start as configured."""


class DataDirBusy(AgentError):
    """Another agent runs with the same data directory."""


class NotFound(AgentError):
    """No process with that slug."""


class Conflict(AgentError):
    """A process with that slug exists already."""


class AppError(AgentError):
    """The app cannot be prepared; the message is shown as the process's ``error``."""


class FetchError(AppError):
    """The source could not be downloaded.

    ``transient`` errors (connection refused, timeouts, 5xx) are retried with backoff;
    the others (404, refused address, too large) are final.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class UnsafeArchive(AppError):
    """The archive tries to escape, holds links or devices, or exceeds a limit."""


class BuildError(AppError):
    """A build failed: its message says which step and ends with the last lines of output.

    ``log`` is the build's whole log, once the failure is the build's (set by ``Builds``).
    Here, not with the builders: the supervisor tells it apart without importing them.
    """

    def __init__(self, message: str, *, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


class ProcfileError(AppError):
    """The Procfile is missing, malformed, or lacks the requested process type."""
