"""The schedules' tables: one row per schedule, and the runs it submitted (the last few).

``schedules.next_run_at`` is the claim: the manager that fires a run moves it on with
``UPDATE ... WHERE next_run_at = <what it read>`` in the transaction that inserts the
run's task, so that of several managers on one database exactly one fires each run,
and a manager killed in the middle leaves both or neither (``store.fire``).
``schedule_runs`` keeps which task each run submitted; its unique ``(schedule_id,
run_at)`` would refuse a second task for one run even if a claim were ever wrong.

Times are Unix seconds as floats, as in ``store.tables``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from herder.manager.store.tables import Base


class Schedule(Base):
    __tablename__ = "schedules"
    __table_args__ = (
        Index("ix_schedules_due", "enabled", "next_run_at"),  # the firing loop's pass
        Index("ix_schedules_owner", "owner", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)  # who made it (auth on)
    name: Mapped[str] = mapped_column(String(255), default="")
    cron: Mapped[str | None] = mapped_column(String(256), nullable=True)
    interval_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    anchor_at: Mapped[float] = mapped_column(Float)  # an interval's runs are anchor + k * interval
    template: Mapped[dict[str, Any]] = mapped_column(JSON)  # the POST /tasks body each run submits
    overlap: Mapped[str] = mapped_column(String(8), default="skip")  # skip | queue | allow
    catch_up: Mapped[str] = mapped_column(String(8), default="none")  # none | one | all
    enabled: Mapped[bool] = mapped_column(default=True)
    next_run_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: never again
    pending_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # queue: a run waiting
    last_run_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_task_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)  # tasks submitted
    skipped: Mapped[int] = mapped_column(Integer, default=0)  # runs not submitted (overlap, missed)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ScheduleRun(Base):
    """A run that submitted a task (the last ``store.KEPT_RUNS`` of each schedule)."""

    __tablename__ = "schedule_runs"
    __table_args__ = (
        UniqueConstraint("schedule_id", "run_at", name="uq_schedule_runs_run"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    run_at: Mapped[float] = mapped_column(Float)  # the time the run was due
    task_id: Mapped[int] = mapped_column(Integer)  # the task it submitted (may be deleted since)
    fired_at: Mapped[float] = mapped_column(Float)
