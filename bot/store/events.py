"""Where the bot is in the event stream: its sync token and the events it has claimed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update

from bot.store.database import Database
from bot.store.models import HandledEvent, SyncState, utcnow
from bot.store.upsert import insert_ignore, upsert


class EventLedger:
    def __init__(self, db: Database, account: str) -> None:
        self._db = db
        self._account = account

    async def sync_token(self) -> str | None:
        async with self._db.transaction() as session:
            row = await session.get(SyncState, self._account)
            return row.next_batch if row else None

    async def save_sync_token(self, token: str) -> None:
        async with self._db.transaction() as session:
            await upsert(
                session, SyncState, "account",
                account=self._account, next_batch=token, updated_at=utcnow(),
            )  # fmt: skip

    async def claim(self, event_id: str, room_id: str) -> bool:
        """True the first time an event id is claimed, False ever after (also across restarts)."""
        async with self._db.transaction() as session:
            return await insert_ignore(
                session, HandledEvent, event_id=event_id, room_id=room_id, handled_at=utcnow()
            )

    async def finish(self, event_id: str) -> None:
        async with self._db.transaction() as session:
            await session.execute(
                update(HandledEvent)
                .where(HandledEvent.event_id == event_id)
                .values(finished_at=utcnow())
            )

    async def unfinished(self, since: datetime, before: datetime) -> list[tuple[str, str]]:
        """(room id, event id) of claims made between `since` and `before` (when this run
        began: its own claims are still being worked on) whose handling never finished."""
        async with self._db.transaction() as session:
            rows = await session.execute(
                select(HandledEvent.room_id, HandledEvent.event_id)
                .where(
                    HandledEvent.finished_at.is_(None),
                    HandledEvent.handled_at >= since,
                    HandledEvent.handled_at < before,
                )
                .order_by(HandledEvent.handled_at)
            )
            return [(room_id, event_id) for room_id, event_id in rows]

    async def forget_before(self, cutoff: datetime) -> None:
        async with self._db.transaction() as session:
            await session.execute(delete(HandledEvent).where(HandledEvent.handled_at < cutoff))
