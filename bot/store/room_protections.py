"""Storage of the protections: per-room overrides and the rooms a join wave closed. Each method is
one named transaction; the rules live in bot/community."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from bot.store.audit import add_entry
from bot.store.database import Database
from bot.store.models import RoomLockdown, RoomProtection


@dataclass(frozen=True)
class Lockdown:
    room_id: str
    join_rule: dict[str, Any]
    reopen_at: datetime
    reason: str | None


class RoomProtectionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def all_overrides(self) -> dict[str, dict[str, dict[str, Any]]]:
        """room -> protection -> key -> value."""
        async with self._db.transaction() as session:
            rows = await session.scalars(select(RoomProtection))
            found: dict[str, dict[str, dict[str, Any]]] = {}
            for row in rows:
                found.setdefault(row.room_id, {})[row.protection] = dict(row.settings or {})
            return found

    async def set_override(
        self, room_id: str, protection: str, key: str, value: Any, *, actor: str
    ) -> dict[str, Any]:
        """Store one override (with its audit entry); the protection's overrides after it."""
        async with self._db.transaction() as session:
            row = await session.get(RoomProtection, (room_id, protection))
            if row is None:
                row = RoomProtection(room_id=room_id, protection=protection, settings={})
                session.add(row)
            settings = {
                **(row.settings or {}),
                key: list(value) if isinstance(value, tuple) else value,
            }
            row.settings = settings
            row.updated_by = actor
            add_entry(session, actor=actor, action="protect.set", room_id=room_id,
                      detail={"protection": protection, "key": key, "value": settings[key]})  # fmt: skip
            return settings

    async def lockdowns(self) -> list[Lockdown]:
        async with self._db.transaction() as session:
            rows = await session.scalars(select(RoomLockdown))
            return [Lockdown(r.room_id, dict(r.join_rule), r.reopen_at, r.reason) for r in rows]

    async def lock(self, lockdown: Lockdown, *, actor: str) -> bool:
        """Record a closed room; False when it is closed already (the first rule is kept)."""
        async with self._db.transaction() as session:
            if await session.get(RoomLockdown, lockdown.room_id) is not None:
                return False
            session.add(RoomLockdown(
                room_id=lockdown.room_id, join_rule=lockdown.join_rule,
                reopen_at=lockdown.reopen_at, reason=lockdown.reason,
            ))  # fmt: skip
            detail = {"join_rule": lockdown.join_rule, "reopen_at": lockdown.reopen_at.isoformat()}
            add_entry(session, actor=actor, action="protect.close", room_id=lockdown.room_id,
                      reason=lockdown.reason, detail=detail)  # fmt: skip
            return True

    async def unlock(self, room_id: str, *, actor: str) -> None:
        async with self._db.transaction() as session:
            await session.execute(delete(RoomLockdown).where(RoomLockdown.room_id == room_id))
            add_entry(session, actor=actor, action="protect.reopen", room_id=room_id)
