"""Room context and reasoning: per-room settings for how many recent room messages a question
sees (answers then stay in the room instead of opening threads) and whether a reasoning model's
thinking is shown folded.

Revision ID: 0013_room_context
Revises: 0012_protections
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_room_context"
down_revision = "0012_protections"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("room_settings") as table:
        table.add_column(sa.Column("gpt_context_messages", sa.Integer(), nullable=True))
        table.add_column(sa.Column("gpt_show_reasoning", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("room_settings") as table:
        table.drop_column("gpt_show_reasoning")
        table.drop_column("gpt_context_messages")
