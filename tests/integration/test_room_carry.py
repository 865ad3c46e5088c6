"""Carrying a room's stored settings to its replacement (room upgrades), on SQLite and on a real
PostgreSQL: every room-keyed table is decided about, settings are copied, schedules and list
bans follow, history stays."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from bot.store import room_carry
from bot.store.models import (
    Announcement,
    ChatMessage,
    Conversation,
    PolicyBan,
    RoomProtection,
    RoomSettings,
    RoomUpgrade,
    Welcomed,
)

OLD, NEW = "!old:x", "!new:x"


def test_every_room_keyed_table_is_decided_about():
    assert room_carry.unclassified_tables() == []
    copied = {t.name for t in room_carry.copied_tables()}
    assert {"room_settings", "welcomed"} <= copied
    assert "handled_events" not in copied and "conversations" not in copied


async def test_carry_copies_settings_moves_schedules_and_leaves_history(migrated_db):
    db = migrated_db
    async with db.transaction() as session:
        session.add(RoomSettings(room_id=OLD, welcome_template="Hi {name}", gpt_enabled=False))
        session.add(Welcomed(room_id=OLD, mxid="@a:x"))
        session.add(Welcomed(room_id=NEW, mxid="@a:x"))  # already there: kept, not doubled
        session.add(Welcomed(room_id=OLD, mxid="@b:x"))
        session.add(Announcement(target=OLD, body="weekly", schedule="every monday 09:00",
                                 created_by="@m:x"))  # fmt: skip
        session.add(Announcement(target="all", body="all", schedule="every monday 09:00",
                                 created_by="@m:x"))  # fmt: skip
        session.add(PolicyBan(room_id=OLD, mxid="@s:evil", list_room_id="!l:x",
                              rule_kind="user", rule_key="k", entity="@s:evil"))  # fmt: skip
        session.add(RoomProtection(room_id=OLD, protection="flood",
                                   settings={"enabled": False}))  # fmt: skip
        conversation = Conversation(room_id=OLD)
        session.add(conversation)
        await session.flush()
        session.add(ChatMessage(conversation_id=conversation.id, role="user", content="hi"))
    async with db.transaction() as session:
        carried = await room_carry.carry(session, OLD, NEW)
        session.add(RoomUpgrade(old_room_id=OLD, new_room_id=NEW, carried=carried,
                                upgraded_at=datetime.now(UTC)))  # fmt: skip
    assert carried == {
        "room_settings": 1, "welcomed": 1, "room_protections": 1, "announcements": 1,
        "policy_bans": 1,
    }  # fmt: skip
    async with db.transaction() as session:
        settings = await session.get(RoomSettings, NEW)
        assert settings is not None and settings.welcome_template == "Hi {name}"
        assert settings.gpt_enabled is False
        assert await session.get(RoomSettings, OLD) is not None  # the old row stays
        protection = await session.get(RoomProtection, (NEW, "flood"))
        assert protection is not None and protection.settings == {"enabled": False}
        welcomed = set(await session.scalars(select(Welcomed.mxid).where(Welcomed.room_id == NEW)))
        assert welcomed == {"@a:x", "@b:x"}
        targets = set(await session.scalars(select(Announcement.target)))
        assert targets == {NEW, "all"}
        assert (await session.scalar(select(PolicyBan.room_id))) == NEW
        assert (await session.scalar(select(Conversation.room_id))) == OLD
        assert await room_carry.successors(session) == {OLD: NEW}
        # A second upgrade: the first room's successor is the newest.
        session.add(RoomUpgrade(old_room_id=NEW, new_room_id="!newer:x",
                                upgraded_at=datetime.now(UTC)))  # fmt: skip
    async with db.transaction() as session:
        assert await room_carry.successors(session) == {OLD: "!newer:x", NEW: "!newer:x"}
