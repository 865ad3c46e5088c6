"""The protections' storage on SQLite and PostgreSQL: per-room overrides and join-wave lockdowns,
each with its audit entry."""

from __future__ import annotations

from datetime import timedelta

from bot.community.audit import AuditLog
from bot.store.models import utcnow
from bot.store.room_protections import Lockdown, RoomProtectionStore


async def test_overrides_and_lockdowns_round_trip(migrated_db):
    store = RoomProtectionStore(migrated_db)
    assert await store.all_overrides() == {}
    await store.set_override("!a:x", "flood", "max_messages", 4, actor="@mod:x")
    await store.set_override("!a:x", "flood", "actions", ("warn", "ban"), actor="@mod:x")
    await store.set_override("!a:x", "filters", "words", ("spam\u0000", "éclair"), actor="@mod:x")
    overrides = await store.all_overrides()
    assert overrides["!a:x"]["flood"] == {"max_messages": 4, "actions": ["warn", "ban"]}
    assert overrides["!a:x"]["filters"]["words"][1] == "éclair"

    reopen = utcnow() + timedelta(minutes=10)
    lockdown = Lockdown("!a:x", {"join_rule": "public"}, reopen, "12 joins within 60 s")
    assert await store.lock(lockdown, actor="@bot:x")
    assert not await store.lock(lockdown, actor="@bot:x")  # the first saved rule is kept
    [saved] = await store.lockdowns()
    assert saved.join_rule == {"join_rule": "public"}
    assert abs((saved.reopen_at - reopen).total_seconds()) < 1
    await store.unlock("!a:x", actor="@bot:x")
    assert await store.lockdowns() == []
    actions = [r.action for r in await AuditLog(migrated_db).recent(10)]
    assert actions == [
        "protect.reopen",
        "protect.close",
        "protect.set",
        "protect.set",
        "protect.set",
    ]
