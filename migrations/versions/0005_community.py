"""Community operations: welcomes, newcomers awaiting a reminder, announcements, room welcome settings.

Revision ID: 0005_community
Revises: 0004_unfinished_events
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision = "0005_community"
down_revision = "0004_unfinished_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("room_settings") as table:
        table.add_column(sa.Column("welcome_enabled", sa.Boolean(), nullable=True))
        table.add_column(sa.Column("welcome_template", sa.Text(), nullable=True))
    op.create_table(
        "welcomed",
        sa.Column("room_id", sa.String(255), primary_key=True),
        sa.Column("mxid", sa.String(255), primary_key=True),
        sa.Column("welcomed_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "newcomers",
        sa.Column("mxid", sa.String(255), primary_key=True),
        sa.Column("room_id", sa.String(255), nullable=False),
        sa.Column("joined_at", UTCDateTime(), nullable=False),
        sa.Column("reminded_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_newcomers_joined_at", "newcomers", ["joined_at"])
    op.create_table(
        "announcements",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("schedule", sa.String(128), nullable=False),
        sa.Column("next_run_at", UTCDateTime(), nullable=True),
        sa.Column("last_run_at", UTCDateTime(), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_announcements_next_run_at", "announcements", ["next_run_at"])


def downgrade() -> None:
    for table in ("announcements", "newcomers", "welcomed"):
        op.drop_table(table)
    with op.batch_alter_table("room_settings") as table:
        table.drop_column("welcome_template")
        table.drop_column("welcome_enabled")
