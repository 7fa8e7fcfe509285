"""The manager's request documents (pydantic): what clients and workers may send.

Shapes follow the Manager API seed (``POST /workers`` with ``hostname`` and ``system``;
``POST /tasks`` with ``priority``, ``settings``, ``type``, ``parser``, ``task_id``);
herder's additions are optional and say what they are for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from herder.apierrors import FieldError
from herder.fleet import Registration, Tag
from herder.openapi_docs import at_least_one_of

# The largest id (and any integer kept in an INTEGER column): PostgreSQL's INTEGER is 32
# bits, and a larger value in a request would fail in the database (a 500), not as a 422.
MAX_ID = 2**31 - 1
DbInt = Annotated[int, Field(ge=-MAX_ID - 1, le=MAX_ID)]
Id = Annotated[int, Field(ge=0, le=MAX_ID)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class WorkerRegistration(Registration):
    """``POST /workers``: a worker (an agent) announces itself; again later to update.

    The fields of the link's ``register`` (``fleet.Registration``), but for
    ``mac_address``, which over HTTP may be any string (as the seed's clients send it)
    or a number (stored as its digits).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    mac_address: Annotated[str, StringConstraints(max_length=64)] | str | int | None = None


class WorkerUpdate(_Request):
    """``PATCH /workers/{id}``: the seed's status (``available``, ``rendering``), or
    herder's ``enabled``/``disabled``; figures as in ``GET /workers/{id}``."""

    status: Literal["available", "rendering", "enabled", "disabled"] | None = None
    update_frequent: dict[str, Any] | None = None
    update_less_frequent: dict[str, Any] | None = None


class TaskSubmission(_Request):
    """``POST /tasks``: what to run (``type`` and ``settings``) and how to follow it."""

    priority: int = Field(0, ge=-1_000_000, le=1_000_000, description="higher runs first")
    settings: dict[str, Any] | str = Field(description="for the compiler: an object, or JSON text")
    type: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(description="the compiler")
    parser: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        "none", description="turns output lines into progress"
    )
    task_id: DbInt | None = Field(None, description="the submitter's own id, kept with the task")
    tags: list[Tag] = Field(
        default_factory=list, max_length=64, description="herder: a worker must offer all"
    )
    max_attempts: int | None = Field(None, ge=1, le=100, description="herder: runs before the task fails")


class TaskUpdate(_Request):
    """``PATCH /tasks/{id}``: a new priority, and/or pause, resume or cancel."""

    # The document says what ``_something`` checks: a priority or a status that is not null.
    model_config = ConfigDict(
        extra="forbid",
        defer_build=True,
        json_schema_extra=at_least_one_of(priority="integer", status="string"),
    )

    priority: int | None = Field(None, ge=-1_000_000, le=1_000_000)
    # ``states.TaskStatus`` values, written out: the schema and the 422's wording stay the
    # seed's (an enum here would change both); tests/test_manager_states.py checks them.
    status: Literal["paused", "queued", "canceled"] | None = Field(
        None, description="paused: hold; queued: resume; canceled: stop (running work is stopped)"
    )

    @model_validator(mode="after")
    def _something(self) -> TaskUpdate:
        if self.priority is None and self.status is None:
            raise FieldError("status", "give a priority, a status (paused, queued, canceled), or both")
        return self


class WorkReport(_Request):
    """A worker's report on one attempt of one piece of work (fenced by ``attempt``)."""

    worker_id: Id
    attempt: int = Field(ge=1, le=MAX_ID)


class ProgressReport(WorkReport):
    frame: DbInt | None = None
    percent: float | None = Field(None, ge=0, le=100)


class FinishedReport(WorkReport):
    exit_code: DbInt
    error: Annotated[str, StringConstraints(max_length=4096)] | None = None


class KeyRequest(_Request):
    """``POST /auth/keys``: a key for a user (an admin issues it, as ``herder keys issue``)."""

    user: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\s/]+$")] = Field(
        description="Who the key names: 1 to 255 characters, no spaces or '/'."
    )
    role: Literal["admin", "user"] = Field("user", description="admin: everything; user: their own.")
    ttl_s: int = Field(
        365 * 86400, ge=60, le=10 * 365 * 86400, description="How long the key lives (seconds)."
    )
