"""Handled events record when their handling finished, so work cut off by a restart is resumed.

Revision ID: 0004_unfinished_events
Revises: 0003_chat
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision = "0004_unfinished_events"
down_revision = "0003_chat"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("handled_events") as table:
        table.add_column(sa.Column("finished_at", UTCDateTime(), nullable=True))
    # Claims made before this revision were handled by a bot that did not record the end.
    op.execute("UPDATE handled_events SET finished_at = handled_at")


def downgrade() -> None:
    with op.batch_alter_table("handled_events") as table:
        table.drop_column("finished_at")
