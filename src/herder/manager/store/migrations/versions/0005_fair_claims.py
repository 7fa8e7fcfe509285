"""Claims that a hung worker or one user's flood cannot break (#12 §3).

* ``work_items.owner`` and ``work_items.turn``: at equal priority, owners are served in
  turn (an item's turn counts its owner's work queued before it);
* ``work_items.tag_key``: the item's tags as one string, so that a claim can pass over,
  in SQL, the tag sets no online worker offers;
* ``blocklist``: the workers that lost an attempt of a task (their lease ran out); they
  get no further attempt of it while another eligible worker exists.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("work_items") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("turn", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("tag_key", sa.String(1024), nullable=False, server_default=""))
    conn = op.get_bind()
    items = sa.table(
        "work_items",
        sa.column("id", sa.Integer),
        sa.column("tags", sa.JSON),
        sa.column("tag_key", sa.String),
        sa.column("status", sa.String),
    )
    rows = conn.execute(
        sa.select(items.c.id, items.c.tags).where(items.c.status.in_(("queued", "assigned", "running")))
    ).all()
    keyed = [{"b_id": i, "b_key": ",".join(sorted(set(tags or ())))} for i, tags in rows if tags]
    if keyed:
        conn.execute(
            items.update().where(items.c.id == sa.bindparam("b_id")).values(tag_key=sa.bindparam("b_key")),
            keyed,
        )
    # Unfinished work takes its task's owner (finished work is never claimed again).
    op.execute(
        "UPDATE work_items SET owner = COALESCE("
        "(SELECT tasks.owner FROM tasks WHERE tasks.id = work_items.task_id), '') "
        "WHERE status IN ('queued', 'assigned', 'running')"
    )
    op.drop_index("ix_work_items_claim", table_name="work_items")
    # Priority descending: the claim's order is read from the index, not sorted.
    op.create_index("ix_work_items_claim", "work_items", ["status", sa.text("priority DESC"), "turn", "id"])
    op.create_index("ix_work_items_turns", "work_items", ["owner", "turn"])
    op.create_table(
        "blocklist",
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("worker_id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("blocklist")
    op.drop_index("ix_work_items_turns", table_name="work_items")
    op.drop_index("ix_work_items_claim", table_name="work_items")
    op.create_index("ix_work_items_claim", "work_items", ["status", "priority", "id"])
    with op.batch_alter_table("work_items") as batch:
        batch.drop_column("tag_key")
        batch.drop_column("turn")
        batch.drop_column("owner")
