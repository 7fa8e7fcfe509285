"""Who submitted a task: with keys and tokens on, users see and touch only their own.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=True))
    op.create_index("ix_tasks_owner", "tasks", ["owner", "id"])


def downgrade() -> None:
    op.drop_index("ix_tasks_owner", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("owner")
