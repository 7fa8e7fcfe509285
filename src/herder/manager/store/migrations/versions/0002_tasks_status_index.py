"""An index on tasks' status: ``GET /tasks?status=`` and ``GET /tasks/counts`` read by it.

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


def downgrade() -> None:
    op.drop_index("ix_tasks_status", table_name="tasks")
