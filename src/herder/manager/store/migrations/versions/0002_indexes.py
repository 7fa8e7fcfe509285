"""Two indexes: tasks by status, and work items by worker and status.

``GET /tasks?status=`` and ``GET /tasks/counts`` read tasks by status. Counting what a
worker holds (every claim, every heartbeat that names running work) reads its items by
status: with an index on the worker alone that read walked every item the worker ever
ran, and claims slowed down as the day went on.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_status", "tasks", ["status", "id"])
    op.create_index("ix_work_items_held", "work_items", ["worker_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_work_items_held", table_name="work_items")
    op.drop_index("ix_tasks_status", table_name="tasks")
