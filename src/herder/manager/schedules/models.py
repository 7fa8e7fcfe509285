"""What a client sends to ``/schedules`` and what it gets back (pydantic).

A schedule's ``task`` is the body of ``POST /tasks``, validated as that route does
(``models.TaskSubmission``, then the compiler its ``type`` names), so that a schedule
that would submit a task the manager refuses is refused itself, at once, naming the
field (``task.settings.command``), rather than failing at every run.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from herder.apierrors import FieldError
from herder.manager.models import TaskSubmission
from herder.manager.schedules.timing import MAX_INTERVAL_S, MIN_INTERVAL_S, Timing
from herder.openapi_docs import at_least_one_of

Overlap = Literal["skip", "queue", "allow"]
CatchUp = Literal["none", "one", "all"]
Name = Annotated[str, StringConstraints(max_length=255)]
Cron = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Zone = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Interval = Annotated[float, Field(ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S)]

_CRON = (
    "A cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with "
    "seconds first; read in 'timezone'. Give it or interval_s."
)
_INTERVAL = f"Seconds between runs ({MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g}). Give it or cron."
_ZONE = "An IANA time zone (UTC, Europe/Paris) the cron expression is read in."
_OVERLAP = (
    "While the previous run's task is still active: skip (submit nothing), queue (one run "
    "waits and is submitted when it ends; more are skipped), allow (submit anyway)."
)
_CATCH_UP = (
    "Runs missed while no manager ran (more than a few seconds late): none (skip them), "
    "one (submit one for them all), all (each, the newest 100 at most)."
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ScheduleRequest(_Request):
    """``POST /schedules``: when to run (``cron`` or ``interval_s``) and what (``task``)."""

    name: Name = Field("", description="A label of your own.")
    cron: Cron | None = Field(None, description=_CRON)
    interval_s: Interval | None = Field(None, description=_INTERVAL)
    timezone: Zone = Field("UTC", description=_ZONE)
    task: TaskSubmission = Field(description="What each run submits: the body of POST /tasks.")
    overlap: Overlap = Field("skip", description=_OVERLAP)
    catch_up: CatchUp = Field("none", description=_CATCH_UP)
    enabled: bool = Field(True, description="false: paused (no run fires until it is resumed).")

    @model_validator(mode="after")
    def _timing(self) -> ScheduleRequest:
        Timing(self.cron, self.interval_s, self.timezone).check()
        return self


class ScheduleUpdate(_Request):
    """``PATCH /schedules/{id}``: any of the fields of a schedule; ``enabled`` pauses and resumes.

    Giving ``cron`` drops the interval and giving ``interval_s`` drops the cron expression.
    """

    model_config = ConfigDict(
        extra="forbid",
        defer_build=True,
        json_schema_extra=at_least_one_of(
            name="string",
            cron="string",
            interval_s="number",
            timezone="string",
            task="object",
            overlap="string",
            catch_up="string",
            enabled="boolean",
        ),
    )

    name: Name | None = None
    cron: Cron | None = Field(None, description=_CRON)
    interval_s: Interval | None = Field(None, description=_INTERVAL)
    timezone: Zone | None = Field(None, description=_ZONE)
    task: TaskSubmission | None = None
    overlap: Overlap | None = Field(None, description=_OVERLAP)
    catch_up: CatchUp | None = Field(None, description=_CATCH_UP)
    enabled: bool | None = Field(None, description="false: pause; true: resume from the next run.")

    @model_validator(mode="after")
    def _something(self) -> ScheduleUpdate:
        given = self.model_dump(exclude_none=True)
        if not given:
            raise FieldError("enabled", "give at least one field to change (enabled: false pauses)")
        if self.cron is not None and self.interval_s is not None:
            raise FieldError("cron", "give either cron or interval_s, not both")
        return self


# -- answers (for the OpenAPI document; the routes build plain dicts) ----------------------


class _Document(BaseModel):
    model_config = ConfigDict(defer_build=True)


class ScheduleDocument(_Document):
    """A schedule as the manager answers it."""

    id: int
    name: str
    owner: str | None = Field(description="Who made it (with keys on); a user sees only their own.")
    cron: str | None
    interval_s: float | None
    timezone: str
    task: dict[str, Any] = Field(description="What each run submits (the body of POST /tasks).")
    overlap: Overlap
    catch_up: CatchUp
    enabled: bool
    next_run_at: float | None = Field(description="Unix seconds of the next run (None: never again).")
    pending_at: float | None = Field(description="overlap=queue: the run waiting for the last task to end.")
    last_run_at: float | None = Field(description="Unix seconds of the last run that submitted a task.")
    last_task_id: int | None = Field(description="The task the last run submitted.")
    runs: int = Field(description="Tasks submitted.")
    skipped: int = Field(description="Runs that submitted nothing (overlap, missed, errors).")
    last_error: str | None = Field(description="Why the last run submitted nothing, if it failed.")
    created_at: float
    updated_at: float


class ScheduleRunDocument(_Document):
    run_at: float = Field(description="When the run was due (Unix seconds).")
    task_id: int = Field(description="The task it submitted (it may have been deleted since).")
    fired_at: float


class ScheduleDetail(ScheduleDocument):
    """``GET /schedules/{id}``: the schedule and its last runs, newest first."""

    recent_runs: list[ScheduleRunDocument]


class ScheduleList(_Document):
    schedules: list[ScheduleDocument] = Field(description="Oldest first; a user's own only.")
