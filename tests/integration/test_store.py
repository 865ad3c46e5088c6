"""The schema and the store, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import inspect, text

from bot.community.audit import AuditLog
from bot.community.outbox import Outbox
from bot.store.database import Database
from bot.store.direct_rooms import DirectRooms
from bot.store.events import EventLedger
from bot.store.migrate import SchemaError, current_revision, head_revision, upgrade_to_head
from bot.store.models import Base, utcnow


@pytest.fixture
async def db(store_url):
    database = Database(store_url)
    yield database
    await database.close()


async def test_empty_database_upgrades_to_head_with_every_table(db):
    before, after = await upgrade_to_head(db)
    assert before is None and after == head_revision()
    async with db.engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert set(Base.metadata.tables) <= tables
    # Running again changes nothing.
    assert await upgrade_to_head(db) == (head_revision(), head_revision())


async def test_schema_matches_the_models(db):
    """The revisions produce what the models declare (no forgotten revision)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    await upgrade_to_head(db, through_revisions=True)
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
        )
    assert diff == []


async def test_a_new_database_made_in_one_go_is_the_one_the_revisions_make(db):
    """A new database gets the models' tables at once (faster than every revision) and is
    stamped with the newest revision: alembic then sees it exactly as if it had run them all."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    assert await upgrade_to_head(db) == (None, head_revision())
    assert await current_revision(db) == head_revision()
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
        )
        names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert diff == [] and "alembic_version" in names
    assert await upgrade_to_head(db, through_revisions=True) == (head_revision(),) * 2


async def test_refuses_a_database_newer_than_the_code(db):
    await upgrade_to_head(db)
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    with pytest.raises(SchemaError, match=r"9999_from_the_future.*newer release"):
        await upgrade_to_head(db)
    assert await current_revision(db) == "9999_from_the_future"


async def test_event_ledger_claims_once_and_keeps_the_sync_token(db):
    await upgrade_to_head(db)
    ledger = EventLedger(db, "@bot:example.org")
    assert await ledger.sync_token() is None
    await ledger.save_sync_token("s1")
    await ledger.save_sync_token("s2")
    assert await ledger.sync_token() == "s2"
    assert await EventLedger(db, "@other:example.org").sync_token() is None

    assert await ledger.claim("$a", "!r:x") is True
    assert await ledger.claim("$a", "!r:x") is False
    assert await ledger.claim("$b", "!r:x") is True
    await ledger.forget_before(utcnow() + timedelta(seconds=1))
    assert await ledger.claim("$a", "!r:x") is True


async def test_outbox_and_audit_and_direct_rooms(db):
    await upgrade_to_head(db)
    outbox = Outbox(db)
    await outbox.put("hello", recipient="@a:x")
    await outbox.put("to a room", room_id="!r:x")
    with pytest.raises(ValueError):
        await outbox.put("nowhere")
    pending = await outbox.pending()
    assert [(m.recipient, m.room_id, m.body) for m in pending] == [
        ("@a:x", None, "hello"),
        (None, "!r:x", "to a room"),
    ]
    await outbox.mark_delivered(pending[0].id)
    assert await outbox.mark_failed(pending[1].id, "boom") == 1
    assert [m.body for m in await outbox.pending()] == ["to a room"]

    audit = AuditLog(db)
    await audit.record(actor="@mod:x", action="kick", target="@a:x", room_id="!r:x", reason="spam")
    await audit.record(actor="@mod:x", action="ban", target="@b:x", detail={"rooms": 2})
    recent = await audit.recent(10)
    assert [(r.action, r.target) for r in recent] == [("ban", "@b:x"), ("kick", "@a:x")]
    assert recent[0].detail == {"rooms": 2} and recent[1].at.tzinfo is not None

    rooms = DirectRooms(db)
    await rooms.put("@a:x", "!dm1:x")
    await rooms.put("@a:x", "!dm2:x")
    assert await rooms.get("@a:x") == "!dm2:x"
    await rooms.drop("@a:x")
    assert await rooms.get("@a:x") is None


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/nested/dir/bot.db")
    try:
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 10_000
    finally:
        await db.close()
