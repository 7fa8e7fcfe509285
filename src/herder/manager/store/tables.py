"""The manager's tables (SQLAlchemy 2, typed). Migrations in ``migrations/versions``.

The main tables: ``workers`` (agents that run work), ``tasks`` (what users submitted,
with their settings, type and parser), ``work_items`` (what a compiler made of a task:
one command each, run by one worker per attempt), ``item_logs`` (an ended item's kept
output), ``auth_keys`` (the keys the manager issued, and their revocations), and
``blocklist`` (which workers lost an attempt of which task). Claims and reports work on
``work_items``; a task's status is derived from its items'. Columns that scheduling
filters on (status, priority) are copied to the items so that a claim reads one table.

Times are Unix seconds as floats: comparable the same way on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from herder.manager.states import ItemStatus, TaskStatus


class Base(DeclarativeBase):
    pass


class Worker(Base):
    __tablename__ = "workers"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids never reused (PostgreSQL: sequences)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hostname: Mapped[str] = mapped_column(String(255), unique=True)
    system: Mapped[str] = mapped_column(String(255), default="")
    ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mac_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    agent_url: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    slots: Mapped[int] = mapped_column(Integer, default=1)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="enabled")  # enabled | disabled
    activity: Mapped[str | None] = mapped_column(String(32), nullable=True)  # available | rendering
    log: Mapped[str | None] = mapped_column(Text, nullable=True)
    time_cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    update_frequent: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    update_less_frequent: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    registered_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_status", "status", "id"),
        Index("ix_tasks_owner", "owner", "id"),
        Index("ix_tasks_updated", "updated_at"),  # the dashboard's feed (manager/events.py)
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the submitter's own id
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)  # who submitted it (auth on)
    type: Mapped[str] = mapped_column(String(64))
    parser: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.QUEUED.value)  # states.TaskStatus
    paused: Mapped[bool] = mapped_column(default=False)
    frame_start: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frame_end: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frame_current: Mapped[int | None] = mapped_column(Integer, nullable=True)
    format: Mapped[str] = mapped_column(String(64), default="")
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id"), nullable=True)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class WorkItem(Base):
    __tablename__ = "work_items"
    __table_args__ = (
        Index("ix_work_items_turns", "owner", "turn"),  # an owner's last turn, at each submission
        Index("ix_work_items_held", "worker_id", "status"),  # what a worker holds
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    argv: Mapped[list[str]] = mapped_column(JSON)
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    cwd: Mapped[str | None] = mapped_column(Text, nullable=True)
    label: Mapped[str] = mapped_column(String(255), default="")
    frame_start: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frame_end: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frame_current: Mapped[int | None] = mapped_column(Integer, nullable=True)
    percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    # states.ItemStatus (its lifecycle: states.ITEM_TRANSITIONS); paused tasks' items stay queued
    status: Mapped[str] = mapped_column(String(16), default=ItemStatus.QUEUED.value)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    paused: Mapped[bool] = mapped_column(default=False)
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id"), nullable=True, index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # the fence: reports name their attempt
    # Fair share: the task's owner ('' without keys) and this item's turn among its owner's
    # work; at equal priority, lower turns are served first (see ``store.claims.claim``).
    owner: Mapped[str] = mapped_column(String(255), default="")
    turn: Mapped[int] = mapped_column(Integer, default=0)
    # The tags as one comparable string (sorted, comma-joined): claims skip, in SQL, the
    # tag sets no online worker offers (JSON lists compare on neither database).
    tag_key: Mapped[str] = mapped_column(String(1024), default="")
    lease_expires: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


# The queue's order (``store.claims``): priority descending, then turn, then id, read in
# index order on both databases (an ascending priority made SQLite sort every queued item).
Index("ix_work_items_claim", WorkItem.status, WorkItem.priority.desc(), WorkItem.turn, WorkItem.id)


class ItemLog(Base):
    """An ended work item's kept output (``output.Output`` holds a live item's in memory).

    One row per item that ended with output, written once, at its end; deleting the item
    (its task) deletes it. ``lines`` are ``[[attempt, stream, text], ...]``, oldest first:
    the last ``output.KEPT_LINES``; ``truncated`` counts the older ones dropped.
    """

    __tablename__ = "item_logs"

    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)  # the item's last attempt
    lines: Mapped[list[list[Any]]] = mapped_column(JSON)
    truncated: Mapped[int] = mapped_column(Integer, default=0)


class Blocked(Base):
    """A worker that lost an attempt of a task: it gets no more of that task while another can."""

    __tablename__ = "blocklist"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    worker_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)


class AuthKey(Base):
    """A key (a long-lived signed token) the manager issued: revoking it ends its tokens too."""

    __tablename__ = "auth_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the key's jti
    subject: Mapped[str] = mapped_column(String(255), index=True)  # the user it names
    role: Mapped[str] = mapped_column(String(16))  # admin | user
    issued_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class SigningKeyRecord(Base):
    """A signing key this database has known: a data dir whose key it does not know is refused.

    Without it, a database emptied or replaced by another looked like a new one, and the
    keys it did not record (or the revocations it lost) went unnoticed (#12 §4).
    """

    __tablename__ = "auth_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)  # the key's RFC 7638 thumbprint
    recorded_at: Mapped[float] = mapped_column(Float)


class ServiceRegistration(Base):
    """A registered service instance (#17): the registry's shared state, one row per id.

    Each manager keeps an in-memory ``herder.registry.Index`` of these rows (queries are
    hot; ``herder.manager.registry_store``). ``expires_at`` NULL means a link keeps it:
    ``holder`` names the manager whose link that is (relayed ones too), and the row goes
    when that link closes or that manager is found dead (``managers``).
    """

    __tablename__ = "service_registrations"
    __table_args__ = (
        Index("ix_service_registrations_expires", "expires_at"),  # the TTL sweep's DELETE
        Index("ix_service_registrations_holder", "holder"),  # a dead manager's links
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # the key's last part
    key: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(255))
    owner_role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    document: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)  # ``metadata`` is SQLAlchemy's
    metadata_bytes: Mapped[int] = mapped_column(Integer)
    registered_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    relay: Mapped[bool] = mapped_column(default=False)
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ManagerRecord(Base):
    """A running manager, beating every second: the holder of its links' registrations.

    A row whose ``beat_at`` is older than ``registry_store.DEAD_AFTER_S`` is a dead
    manager's: any other drops it and the registrations its links kept.
    """

    __tablename__ = "managers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # random, one per start
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    beat_at: Mapped[float] = mapped_column(Float)
