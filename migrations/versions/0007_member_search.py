"""Member search that an index can serve: on PostgreSQL, trigram (pg_trgm) GIN indexes on the
lower-cased Matrix ID, SSO username and email, so that `!users <substring>` (`lower(col) LIKE
'%...%'`) does not read every member. SQLite gets nothing: it has no trigram index, and its
installs are small.

The indexes are declared in bot/store/models.py as well (created only on PostgreSQL there too),
so that the models and the migrated schema compare equal on both backends.

Revision ID: 0007_member_search
Revises: 0006_hardening
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0007_member_search"
down_revision = "0006_hardening"
branch_labels = None
depends_on = None

# name, table, column: GIN (lower(column) gin_trgm_ops)
INDEXES = (
    ("ix_users_mxid_trgm", "users", "mxid"),
    ("ix_identities_username_trgm", "identities", "username"),
    ("ix_identities_email_trgm", "identities", "email"),
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    available = bind.execute(
        text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    ).scalar()
    if not available:
        raise RuntimeError(
            "PostgreSQL's pg_trgm extension is not available on the database server; it ships "
            "with PostgreSQL itself (Debian: postgresql-15, elsewhere postgresql-contrib)"
        )
    # pg_trgm is a trusted extension (PostgreSQL 13+): the database's owner may create it.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # fastupdate off: a new member goes into the index at once, never into a pending list that
    # every search would read through until the next (auto)vacuum. Members come one by one.
    for name, table, column in INDEXES:
        op.execute(
            f"CREATE INDEX {name} ON {table} "
            f"USING gin (lower({column}) gin_trgm_ops) WITH (fastupdate = off)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, _, _ in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    # The extension stays: other schemas in the database may use it, and it costs nothing.
