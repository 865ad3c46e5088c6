"""Member lifecycle: roles that follow the identity provider (refresh tokens kept encrypted, sync
times, stale bindings, who decides a role), back-channel logout tokens already seen, and the
registration tokens members invite newcomers with.

Revision ID: 0008_lifecycle
Revises: 0007_member_search
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision = "0008_lifecycle"
down_revision = "0007_member_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as table:
        table.add_column(
            sa.Column("role_source", sa.String(16), nullable=False, server_default="sso")
        )
    # A role someone set with !role before this revision stays theirs to decide.
    op.execute(
        "UPDATE users SET role_source = 'manual' WHERE mxid IN "
        "(SELECT target FROM audit_log WHERE action = 'role' AND target IS NOT NULL)"
    )
    with op.batch_alter_table("identities") as table:
        table.add_column(sa.Column("refresh_token", sa.Text(), nullable=True))
        table.add_column(sa.Column("session_id", sa.String(255), nullable=True))
        table.add_column(sa.Column("synced_at", UTCDateTime(), nullable=True))
        table.add_column(sa.Column("stale_at", UTCDateTime(), nullable=True))
    op.create_table(
        "logout_tokens_seen",
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("issuer", sa.String(512), primary_key=True),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_logout_tokens_seen_seen_at", "logout_tokens_seen", ["seen_at"])
    op.create_table(
        "invite_tokens",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("uses_allowed", sa.Integer(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(255), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("invite_tokens")
    op.drop_index("ix_logout_tokens_seen_seen_at", "logout_tokens_seen")
    op.drop_table("logout_tokens_seen")
    with op.batch_alter_table("identities") as table:
        for column in ("stale_at", "synced_at", "session_id", "refresh_token"):
            table.drop_column(column)
    with op.batch_alter_table("users") as table:
        table.drop_column("role_source")
