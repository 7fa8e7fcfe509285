"""An ended work item's kept output, so that its log outlives the manager's memory.

``item_logs``: one row per work item that ended with output (none for an item without):
the lines the manager kept of it, ``[[attempt, stream, text], ...]`` oldest first, the
item's last attempt, and how many older lines the per-item bound had dropped. Deleting
the item (its task) deletes the row.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "item_logs",
        sa.Column(
            "item_id",
            sa.Integer,
            sa.ForeignKey("work_items.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("lines", sa.JSON, nullable=False),
        sa.Column("truncated", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("item_logs")
