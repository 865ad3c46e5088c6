"""Shared ban lists and room upgrades: the policy rooms the community follows, the bans their
rules caused (so a withdrawn rule lifts exactly those), the server-ACL denies they wrote (so a
sync takes back exactly those), and which room replaced which.

Revision ID: 0010_policy_lists
Revises: 0009_leader_lease
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision = "0010_policy_lists"
down_revision = "0009_leader_lease"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_lists",
        sa.Column("room_id", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("subscribed_by", sa.String(255), nullable=False),
        sa.Column("subscribed_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "policy_bans",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("room_id", sa.String(255), nullable=False),
        sa.Column("mxid", sa.String(255), nullable=False),
        sa.Column("list_room_id", sa.String(255), nullable=False),
        sa.Column("rule_kind", sa.String(16), nullable=False),
        sa.Column("rule_key", sa.Text(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("banned_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("room_id", "mxid", name="uq_policy_bans_room_mxid"),
    )
    op.create_index("ix_policy_bans_rule", "policy_bans", ["list_room_id", "rule_kind", "rule_key"])
    op.create_table(
        "policy_acl_denies",
        sa.Column("room_id", sa.String(255), primary_key=True),
        sa.Column("deny", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "room_upgrades",
        sa.Column("old_room_id", sa.String(255), primary_key=True),
        sa.Column("new_room_id", sa.String(255), nullable=False),
        sa.Column("upgraded_at", UTCDateTime(), nullable=False),
        sa.Column("carried", sa.JSON(), nullable=True),
    )
    op.create_index("ix_room_upgrades_new_room_id", "room_upgrades", ["new_room_id"])


def downgrade() -> None:
    op.drop_index("ix_room_upgrades_new_room_id", "room_upgrades")
    op.drop_table("room_upgrades")
    op.drop_table("policy_acl_denies")
    op.drop_index("ix_policy_bans_rule", "policy_bans")
    op.drop_table("policy_bans")
    op.drop_table("policy_lists")
