"""Hardening against hostile input: quarantined events, quota reservations, a fair outbox that
expires what cannot be delivered, answers resumed in place, DM conversations owned by the member.

Revision ID: 0006_hardening
Revises: 0005_community
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision = "0006_hardening"
down_revision = "0005_community"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quarantined_events",
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("room_id", sa.String(255), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("quarantined_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_quarantined_events_quarantined_at", "quarantined_events", ["quarantined_at"]
    )
    with op.batch_alter_table("handled_events") as table:
        table.add_column(sa.Column("reply_event_id", sa.String(255), nullable=True))
    with op.batch_alter_table("gpt_usage") as table:
        table.add_column(
            sa.Column("reserved_tokens", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("conversations") as table:
        table.add_column(sa.Column("member", sa.String(255), nullable=True))
    with op.batch_alter_table("outbox") as table:
        table.add_column(sa.Column("kind", sa.String(32), nullable=False, server_default="text"))
        table.add_column(sa.Column("next_attempt_at", UTCDateTime(), nullable=True))
        table.add_column(sa.Column("expired_at", UTCDateTime(), nullable=True))
        table.drop_index("ix_outbox_pending")
        table.create_index("ix_outbox_due", ["delivered_at", "expired_at", "next_attempt_at"])
    # Rows that an older bot gave up on (20 failed attempts) count as expired.
    op.execute(
        "UPDATE outbox SET expired_at = created_at WHERE delivered_at IS NULL AND attempts >= 20"
    )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as table:
        table.drop_index("ix_outbox_due")
        table.create_index("ix_outbox_pending", ["delivered_at", "id"])
        table.drop_column("expired_at")
        table.drop_column("next_attempt_at")
        table.drop_column("kind")
    with op.batch_alter_table("conversations") as table:
        table.drop_column("member")
    with op.batch_alter_table("gpt_usage") as table:
        table.drop_column("reserved_tokens")
    with op.batch_alter_table("handled_events") as table:
        table.drop_column("reply_event_id")
    op.drop_table("quarantined_events")
