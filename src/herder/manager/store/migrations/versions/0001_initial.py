"""The first schema: workers, tasks, work items.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hostname", sa.String(255), nullable=False, unique=True),
        sa.Column("system", sa.String(255), nullable=False),
        sa.Column("ip_address", sa.String(64)),
        sa.Column("mac_address", sa.String(64)),
        sa.Column("port", sa.Integer),
        sa.Column("agent_url", sa.String(1024)),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("activity", sa.String(32)),
        sa.Column("log", sa.Text),
        sa.Column("time_cost", sa.Float),
        sa.Column("update_frequent", sa.JSON, nullable=False),
        sa.Column("update_less_frequent", sa.JSON, nullable=False),
        sa.Column("registered_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sqlite_autoincrement=True,  # ids are never reused: a late report must not reach a new row
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("parser", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("frame_start", sa.Integer),
        sa.Column("frame_end", sa.Integer),
        sa.Column("frame_current", sa.Integer),
        sa.Column("format", sa.String(64), nullable=False),
        sa.Column("worker_id", sa.Integer, sa.ForeignKey("workers.id")),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "work_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("argv", sa.JSON, nullable=False),
        sa.Column("env", sa.JSON, nullable=False),
        sa.Column("cwd", sa.Text),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("frame_start", sa.Integer),
        sa.Column("frame_end", sa.Integer),
        sa.Column("frame_current", sa.Integer),
        sa.Column("percent", sa.Float),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("worker_id", sa.Integer, sa.ForeignKey("workers.id")),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("lease_expires", sa.Float),
        sa.Column("exit_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_work_items_task_id", "work_items", ["task_id"])
    op.create_index("ix_work_items_worker_id", "work_items", ["worker_id"])
    op.create_index("ix_work_items_claim", "work_items", ["status", "priority", "id"])


def downgrade() -> None:
    op.drop_table("work_items")
    op.drop_table("tasks")
    op.drop_table("workers")
