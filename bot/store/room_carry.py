"""Carrying a room's stored settings to the room that replaced it (a room upgrade), over every
room-keyed table at once, in one transaction:

- a table whose primary key includes `room_id` holds per-room settings (room_settings, welcomed,
  per-room protections, and any such table added later): its rows are COPIED to the new room id
  (a row the new room already has is kept, not overwritten);
- the columns in MOVED point at a room where something happens later (scheduled announcements,
  bans a list caused): they are rewritten to the new room id;
- LEFT are records of what happened in the old room (events, conversations, deliveries): they
  stay with it.

A table with a room column in none of these fails a unit test, so a new table gets a decision."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.models import Base, RoomUpgrade

ROOM_COLUMN = "room_id"
MOVED: dict[str, str] = {  # table -> the column naming the room
    "announcements": "target",
    "policy_bans": "room_id",
    "newcomers": "room_id",
}
LEFT: frozenset[str] = frozenset({
    "handled_events", "quarantined_events", "outbox", "direct_rooms", "conversations",
    "audit_log", "policy_lists", "chat_media", "room_lockdowns",
})  # fmt: skip


def copied_tables() -> list[Table]:
    """The per-room settings tables (their primary key includes room_id)."""
    return [
        table for name, table in sorted(Base.metadata.tables.items())
        if name not in MOVED and name not in LEFT
        and ROOM_COLUMN in {c.name for c in table.primary_key.columns}
    ]  # fmt: skip


def unclassified_tables() -> list[str]:
    """Tables with a room column that nobody decided about (should be empty)."""
    copied = {t.name for t in copied_tables()}
    return [
        name for name, table in sorted(Base.metadata.tables.items())
        if ROOM_COLUMN in table.columns and name not in copied | set(MOVED) | LEFT
    ]  # fmt: skip


async def carry(session: AsyncSession, old: str, new: str) -> dict[str, int]:
    """Copy and move the old room's rows (see the module); how many rows per table."""
    carried: dict[str, int] = {}
    for table in copied_tables():
        rows = (await session.execute(select(table).where(table.c[ROOM_COLUMN] == old))).all()
        count = 0
        for row in rows:
            values: dict[str, Any] = dict(row._mapping)
            values[ROOM_COLUMN] = new
            key = [table.c[c.name] == values[c.name] for c in table.primary_key.columns]
            if (await session.execute(select(table).where(and_(*key)))).first() is None:
                await session.execute(insert(table).values(**values))
                count += 1
        if count:
            carried[table.name] = count
    for name, column in MOVED.items():
        table = Base.metadata.tables.get(name)
        if table is None:
            continue
        result = await session.execute(
            update(table).where(table.c[column] == old).values({column: new})
        )
        if result.rowcount:
            carried[name] = result.rowcount
    return carried


async def successors(session: AsyncSession) -> dict[str, str]:
    """Each upgraded room -> the newest room that replaced it (chains followed)."""
    direct = {
        row.old_room_id: row.new_room_id for row in await session.scalars(select(RoomUpgrade))
    }
    newest = {}
    for old in direct:
        seen, room = {old}, direct[old]
        while room in direct and room not in seen:  # a cycle (never expected) stops the walk
            seen.add(room)
            room = direct[room]
        newest[old] = room
    return newest
