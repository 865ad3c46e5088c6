"""GPT relay: conversations, messages, daily usage, room settings, per-member quota.

Revision ID: 0003_chat
Revises: 0002_identities
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision = "0003_chat"
down_revision = "0002_identities"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("users") as users:
        users.add_column(sa.Column("gpt_daily_quota", sa.Integer(), nullable=True))
    op.create_table(
        "conversations",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("room_id", sa.String(255), nullable=False),
        sa.Column("thread_root", sa.String(255), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("summary_upto", sa.BigInteger(), nullable=True),
    )
    op.create_index(
        "ix_conversations_scope", "conversations", ["room_id", "thread_root", "closed_at"]
    )
    op.create_index("ix_conversations_updated_at", "conversations", ["updated_at"])
    op.create_table(
        "chat_messages",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column(
            "conversation_id",
            ID,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("author", sa.String(255), nullable=True),
        sa.Column("author_name", sa.String(255), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=True),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_chat_messages_conversation_id", "chat_messages", ["conversation_id"])
    op.create_index("ix_chat_messages_author", "chat_messages", ["author"])
    op.create_index("ix_chat_messages_event_id", "chat_messages", ["event_id"])
    op.create_table(
        "gpt_usage",
        sa.Column("mxid", sa.String(255), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
    )
    op.create_table(
        "room_settings",
        sa.Column("room_id", sa.String(255), primary_key=True),
        sa.Column("gpt_enabled", sa.Boolean(), nullable=True),
        sa.Column("gpt_model", sa.String(255), nullable=True),
        sa.Column("gpt_prompt", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=True),
    )


def downgrade() -> None:
    for table in ("room_settings", "gpt_usage", "chat_messages", "conversations"):
        op.drop_table(table)
    with op.batch_alter_table("users") as users:
        users.drop_column("gpt_daily_quota")
