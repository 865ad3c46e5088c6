"""Protections: per-room overrides of `[protections]` (set by moderators with `!protect`), and the
rooms a join wave closed, with the join rule to restore and when.

Revision ID: 0012_protections
Revises: 0011_assistant_media
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision = "0012_protections"
down_revision = "0011_assistant_media"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "room_protections",
        sa.Column("room_id", sa.String(255), primary_key=True),
        sa.Column("protection", sa.String(32), primary_key=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=True),
    )
    op.create_table(
        "room_lockdowns",
        sa.Column("room_id", sa.String(255), primary_key=True),
        sa.Column("join_rule", sa.JSON(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=False),
        sa.Column("reopen_at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("room_lockdowns")
    op.drop_table("room_protections")
