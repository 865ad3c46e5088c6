"""SSO identities bound to Matrix IDs, and one-time login links.

Revision ID: 0002_identities
Revises: 0001_foundation
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision = "0002_identities"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("mxid", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("username", sa.String(255), nullable=True),
        sa.Column("display_name", sa.String(255), nullable=True),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("linked_at", UTCDateTime(), nullable=False),
        sa.Column("last_login_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("issuer", "subject", name="uq_identities_issuer_subject"),
        sa.UniqueConstraint("mxid", "provider", name="uq_identities_mxid_provider"),
    )
    op.create_index("ix_identities_mxid", "identities", ["mxid"])
    op.create_table(
        "login_links",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("mxid", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("browser_hash", sa.String(64), nullable=True),
        sa.Column("used_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_login_links_mxid", "login_links", ["mxid"])
    op.create_index("ix_login_links_expires_at", "login_links", ["expires_at"])


def downgrade() -> None:
    op.drop_table("login_links")
    op.drop_table("identities")
