"""Messages waiting for the bot to deliver them. Written by any part (the web app too) inside its own
transaction; delivered by the bot promptly, and after a restart if it was down."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.database import Database
from bot.store.models import OutboxMessage, utcnow

MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class PendingMessage:
    id: int
    recipient: str | None
    room_id: str | None
    body: str
    attempts: int
    created_at: datetime

    @property
    def key(self) -> str:
        """Unique to this message, also across a database that was recreated."""
        return f"outbox-{self.id}-{int(self.created_at.timestamp() * 1000)}"


def enqueue(
    session: AsyncSession, body: str, *, recipient: str | None = None, room_id: str | None = None
) -> None:
    """Queue a markdown message for a user (by DM) or a room, in the caller's transaction."""
    if (recipient is None) == (room_id is None):
        raise ValueError("an outbox message goes to exactly one of a recipient or a room")
    session.add(OutboxMessage(recipient=recipient, room_id=room_id, body=body, attempts=0))


class Outbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(
        self, body: str, *, recipient: str | None = None, room_id: str | None = None
    ) -> None:
        async with self._db.transaction() as session:
            enqueue(session, body, recipient=recipient, room_id=room_id)

    async def pending(self, limit: int = 50) -> list[PendingMessage]:
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.delivered_at.is_(None), OutboxMessage.attempts < MAX_ATTEMPTS)
                .order_by(OutboxMessage.id)
                .limit(limit)
            )
            return [
                PendingMessage(r.id, r.recipient, r.room_id, r.body, r.attempts, r.created_at)
                for r in rows
            ]

    async def mark_delivered(self, message_id: int) -> None:
        async with self._db.transaction() as session:
            row = await session.get(OutboxMessage, message_id)
            if row is not None:
                row.delivered_at = utcnow()
                row.attempts += 1

    async def mark_failed(self, message_id: int, error: str) -> int:
        """Returns the number of attempts so far."""
        async with self._db.transaction() as session:
            row = await session.get(OutboxMessage, message_id)
            if row is None:
                return 0
            row.attempts += 1
            row.last_error = error[:500]
            return row.attempts
