"""Where the bot is in the event stream: its sync token and the events it has claimed. These run for
every message, so they are plain statements on a connection, without the ORM's session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.store.database import Database
from bot.store.models import HandledEvent, QuarantinedEvent, SyncState, utcnow
from bot.store.upsert import insert_ignore, upsert


@dataclass(frozen=True)
class Claim:
    room_id: str
    event_id: str
    handled_at: datetime
    reply_event_id: str | None  # a placeholder that was being edited into the answer


class EventLedger:
    def __init__(self, db: Database, account: str) -> None:
        self._db = db
        self._account = account
        # Active/standby (bot/leader.py): checked in the transaction of each claim and sync
        # token, so a leader whose lease was taken over writes neither.
        self.fence: Callable[[AsyncConnection], Awaitable[None]] | None = None

    async def database_reachable(self) -> bool:
        return await self._db.reachable()

    async def sync_token(self) -> str | None:
        async with self._db.engine.connect() as conn:
            return await conn.scalar(
                select(SyncState.next_batch).where(SyncState.account == self._account)
            )

    async def save_sync_token(self, token: str) -> None:
        async with self._db.engine.begin() as conn:
            if self.fence is not None:
                await self.fence(conn)
            await upsert(
                conn, SyncState, "account",
                account=self._account, next_batch=token, updated_at=utcnow(),
            )  # fmt: skip

    async def claim(self, event_id: str, room_id: str) -> bool:
        """True the first time an event id is claimed, False ever after (also across restarts)."""
        async with self._db.engine.begin() as conn:
            if self.fence is not None:
                await self.fence(conn)
            return await insert_ignore(
                conn, HandledEvent, event_id=event_id, room_id=room_id, handled_at=utcnow()
            )

    async def finish(self, event_id: str) -> None:
        await self._set(event_id, finished_at=utcnow())

    async def set_reply(self, event_id: str, reply_event_id: str) -> None:
        """The message answering this event is under way (a placeholder being edited)."""
        await self._set(event_id, reply_event_id=reply_event_id)

    async def _set(self, event_id: str, **values: object) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(HandledEvent).where(HandledEvent.event_id == event_id).values(**values)
            )

    async def reply_of(self, event_id: str) -> str | None:
        async with self._db.engine.connect() as conn:
            return await conn.scalar(
                select(HandledEvent.reply_event_id).where(HandledEvent.event_id == event_id)
            )

    async def quarantine(self, event_id: str, room_id: str, attempts: int, error: str) -> None:
        """Record an event that could not be handled; it is skipped from now on."""
        async with self._db.transaction() as session:
            await insert_ignore(
                session, QuarantinedEvent, event_id=event_id, room_id=room_id,
                attempts=attempts, error=error[:2000], quarantined_at=utcnow(),
            )  # fmt: skip
            # Claimed or not, it is done with: a restart must not take it up again.
            await insert_ignore(
                session, HandledEvent, event_id=event_id, room_id=room_id, handled_at=utcnow()
            )
            await session.execute(
                update(HandledEvent)
                .where(HandledEvent.event_id == event_id)
                .values(finished_at=utcnow())
            )

    async def quarantined(self) -> list[QuarantinedEvent]:
        async with self._db.transaction() as session:
            return list(
                await session.scalars(
                    select(QuarantinedEvent).order_by(QuarantinedEvent.quarantined_at)
                )
            )

    async def unfinished(self, since: datetime, before: datetime) -> list[Claim]:
        """Claims made between `since` and `before` (when this run began: its own claims are
        still being worked on) whose handling never finished, oldest first."""
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(HandledEvent)
                .where(
                    HandledEvent.finished_at.is_(None),
                    HandledEvent.handled_at >= since,
                    HandledEvent.handled_at < before,
                )
                .order_by(HandledEvent.handled_at)
            )
            return [Claim(r.room_id, r.event_id, r.handled_at, r.reply_event_id) for r in rows]

    async def forget_before(self, cutoff: datetime) -> None:
        async with self._db.transaction() as session:
            await session.execute(delete(HandledEvent).where(HandledEvent.handled_at < cutoff))
