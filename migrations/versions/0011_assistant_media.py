"""Assistant media: images members send, kept by reference (MXC URI and, for encrypted
attachments, the key to read them), and the per-room switches for images in and voice out.

Revision ID: 0011_assistant_media
Revises: 0010_policy_lists
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision = "0011_assistant_media"
down_revision = "0010_policy_lists"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chat_media",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column(
            "message_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("chat_messages.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("room_id", sa.String(255), nullable=False),
        sa.Column("thread_root", sa.String(255), nullable=True),
        sa.Column("member", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("mxc", sa.String(512), nullable=False),
        sa.Column("mimetype", sa.String(127), nullable=True),
        sa.Column("encryption", sa.JSON(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_chat_media_message_id", "chat_media", ["message_id"])
    op.create_index("ix_chat_media_event_id", "chat_media", ["event_id"])  # redactions
    op.create_index("ix_chat_media_pending", "chat_media", ["room_id", "member", "message_id"])
    with op.batch_alter_table("room_settings") as table:
        table.add_column(sa.Column("gpt_vision", sa.Boolean(), nullable=True))
        table.add_column(sa.Column("gpt_speak", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("room_settings") as table:
        table.drop_column("gpt_speak")
        table.drop_column("gpt_vision")
    op.drop_index("ix_chat_media_pending", "chat_media")
    op.drop_index("ix_chat_media_event_id", "chat_media")
    op.drop_index("ix_chat_media_message_id", "chat_media")
    op.drop_table("chat_media")
