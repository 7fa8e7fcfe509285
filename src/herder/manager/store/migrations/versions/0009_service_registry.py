"""The service registry in the database (#17): registrations and the managers holding links.

``service_registrations``: one row per registered instance, so that every manager on one
PostgreSQL finds it and a restarted manager (SQLite too) still has it until its TTL.
``managers``: each running manager's heartbeat; the link-held registrations of one that
stopped beating are dropped by the others.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_registrations",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("owner_role", sa.String(16), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("metadata_bytes", sa.Integer(), nullable=False),
        sa.Column("registered_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("relay", sa.Boolean(), nullable=False),
        sa.Column("holder", sa.String(64), nullable=True),
    )
    op.create_index("ix_service_registrations_expires", "service_registrations", ["expires_at"])
    op.create_index("ix_service_registrations_holder", "service_registrations", ["holder"])
    op.create_table(
        "managers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("beat_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("managers")
    op.drop_index("ix_service_registrations_holder", table_name="service_registrations")
    op.drop_index("ix_service_registrations_expires", table_name="service_registrations")
    op.drop_table("service_registrations")
