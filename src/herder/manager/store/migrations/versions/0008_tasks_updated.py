"""Tasks by the time they last changed, for the dashboard's live feed (#15).

``ix_tasks_updated``: ``manager/events.py`` reads the tasks changed since its last pass
(``updated_at`` past a cursor) a few times a second while a browser watches; without
the index each pass would read every task (100,000 of them on a big farm).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_updated", "tasks", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_updated", table_name="tasks")
