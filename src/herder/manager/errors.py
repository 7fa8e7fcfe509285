"""The manager's errors: one tree, each error with a stable wire code and an HTTP status.

Hierarchy::

    ManagerError                base of everything the manager raises on purpose  (500)
    ├── StartupError            the manager cannot start as configured (exit 2)
    ├── DatabaseError           the database URL is wrong, or the database cannot be
    │                           reached or migrated                              (503)
    ├── UnknownDatabase         the database does not know the data dir's signing key:
    │                           it is not this manager's own                     (503)
    ├── NotFound                no such worker, task or work item    (404, LookupError)
    ├── Conflict                the change cannot be made in the current status  (409)
    │   └── FencedOut           a report from an attempt that no longer owns its work
    ├── InvalidTask             a submission that cannot be compiled (422, ValueError)
    │   └── TaskTypeError       raised by compilers and parsers (the plugins' name)
    ├── TargetRefused           a URL the proxy will not forward to  (403, ValueError)
    ├── NotIssued               a key the database does not record as issued
    │                           (401, also a ``herder.auth.TokenError``)
    └── TransitionError         a work item or task moved against the lifecycle table
                                (``manager.states``): a bug in the manager       (500)

Each class carries ``code``, a snake_case string that is part of the protocol: the HTTP
layer answers it as ``error`` (``{"error": code, "message": ..., "field": ...}``) and the
agents' link sends it with a refused call. Programs match codes, never class names, and a
code, once published, keeps its meaning. ``http_status`` is the status of the HTTP answer;
``field`` names what to fix in the request (``None``: nothing in it).

Several errors keep a builtin base (``LookupError``, ``ValueError``) or another package's
(``TokenError``), because callers older than this tree catch those.

Translation happens at the boundaries only: ``manager.api`` turns any ``ManagerError``
into the one error document (``answer_of``); lower layers' errors (the database driver,
the resolver) are turned into these with ``raise ... from exc`` where they are caught.
"""

from __future__ import annotations

from typing import ClassVar

from herder.auth import TokenError

__all__ = [
    "Conflict",
    "DatabaseError",
    "FencedOut",
    "InvalidTask",
    "ManagerError",
    "NotFound",
    "NotIssued",
    "StartupError",
    "TargetRefused",
    "TaskTypeError",
    "TransitionError",
    "UnknownDatabase",
]


class ManagerError(Exception):
    """Base of the manager's own errors.

    Attributes:
        code: the stable wire code (class-wide).
        http_status: the status of the HTTP answer (class-wide).
        field: what to fix in the request; a class default, or given per error.
    """

    code: ClassVar[str] = "manager_error"
    http_status: ClassVar[int] = 500
    field: str | None = None


class StartupError(ManagerError):
    """The manager cannot start as configured (keys, secret, database, address)."""

    code = "cannot_start"


class DatabaseError(ManagerError):
    """The database URL is wrong or the database cannot be reached or migrated."""

    code = "database_error"
    http_status = 503


class UnknownDatabase(ManagerError):
    """The database does not know the data dir's signing key: it is not this manager's own."""

    code = "unknown_database"
    http_status = 503


class NotFound(ManagerError, LookupError):
    """No such worker, task or work item (another user's task counts as none)."""

    code = "not_found"
    http_status = 404
    field = "id"


class Conflict(ManagerError):
    """The change cannot be made in the status its subject is in (a task that has ended)."""

    code = "conflict"
    http_status = 409

    def __init__(self, message: str, field: str | None = "status") -> None:
        super().__init__(message)
        self.field = field


class FencedOut(Conflict):
    """A report from an attempt that no longer owns its work (it was requeued or canceled)."""

    code = "fenced"

    def __init__(self, message: str) -> None:
        super().__init__(message, "attempt")


class InvalidTask(ManagerError, ValueError):
    """A submission that cannot be used: its settings, its task type or its parser.

    ``field`` names what is wrong the way a client wrote it (``"settings.frame_end"``,
    ``"settings"``, ``"type"``, ``"parser"``); ``message`` says what, for a person.
    ``str()`` gives both: ``"settings.frame_end: must be >= frame_start (10), got 5"``.
    """

    code = "invalid"
    http_status = 422
    field: str

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[InvalidTask], tuple[str, str]]:
        # ValueError pickles as cls(*args) with the one formatted string; keep both parts
        # so the error survives a process boundary (a worker pool, a test runner).
        return (type(self), (self.field, self.message))


class TaskTypeError(InvalidTask):
    """What compilers and parsers raise for settings they cannot use (the plugins' API)."""


class TargetRefused(ManagerError, ValueError):
    """A URL the proxy will not forward to; ``field`` is the registration's field."""

    code = "forbidden_target"
    http_status = 403
    field = "url"


class NotIssued(ManagerError, TokenError):
    """A key (or a token bought with one) that the database does not record as issued."""

    code = "not_issued"
    reason = "not_issued"
    http_status = 401
    field = "Authorization"


class TransitionError(ManagerError):
    """A move the lifecycle table (``manager.states``) does not allow: a bug in the caller.

    ``status`` and ``event`` are the enum members (``ItemStatus``/``ItemEvent`` or
    ``TaskStatus``/``TaskEvent``); the message names both.
    """

    code = "illegal_transition"

    def __init__(self, status: str, event: str) -> None:
        super().__init__(f"event {str(event)!r} is not allowed in status {str(status)!r}")
        self.status = status
        self.event = event
