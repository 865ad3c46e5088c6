"""The audit log: every state-changing action, who did it, to whom, where and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from bot.store.audit import add_entry
from bot.store.database import Database
from bot.store.models import AuditEntry

__all__ = ["AuditLog", "AuditRecord", "add_entry"]


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    actor: str
    action: str
    target: str | None
    room_id: str | None
    reason: str | None
    detail: dict[str, Any] | None


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, **entry: Any) -> None:
        async with self._db.transaction() as session:
            add_entry(session, **entry)

    async def recent(self, limit: int) -> list[AuditRecord]:
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            )
            return [
                AuditRecord(r.at, r.actor, r.action, r.target, r.room_id, r.reason, r.detail)
                for r in rows
            ]
