"""Messages waiting for the bot to deliver them. Written by any part (the web app too) inside its own
transaction; delivered by the bot promptly, and after a restart if it was down.

Delivery is fair: a message that cannot go yet (its recipient has not joined the DM, or sending
failed) is put back with a time before which it is not tried, so it never holds up later ones.
What cannot be delivered within OUTBOX_TTL, or after MAX_ATTEMPTS failures, expires (logged and
audited); delivered messages are purged after DELIVERED_KEPT. A login link is never stored: the
row says that one is to be sent, and the link is made when the message goes out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.community.audit import add_entry
from bot.store.database import Database
from bot.store.models import OutboxMessage, utcnow

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 20
OUTBOX_TTL = timedelta(days=7)
DELIVERED_KEPT = timedelta(days=7)
BATCH = 50
TEXT, LOGIN_LINK = "text", "login_link"
ACCESS = "access"  # no message: the member's group-gated rooms are to be brought up to date
SYSTEM_ACTOR = "community-bot"  # the audit log's actor for what the bot does on its own


@dataclass(frozen=True)
class PendingMessage:
    id: int
    recipient: str | None
    room_id: str | None
    body: str
    attempts: int
    created_at: datetime
    kind: str = TEXT

    @property
    def key(self) -> str:
        """Unique to this message, also across a database that was recreated."""
        return f"outbox-{self.id}-{int(self.created_at.timestamp() * 1000)}"


def enqueue(
    session: AsyncSession,
    body: str,
    *,
    recipient: str | None = None,
    room_id: str | None = None,
    kind: str = TEXT,
) -> None:
    """Queue a markdown message for a user (by DM) or a room, in the caller's transaction."""
    if (recipient is None) == (room_id is None):
        raise ValueError("an outbox message goes to exactly one of a recipient or a room")
    session.add(
        OutboxMessage(recipient=recipient, room_id=room_id, body=body, attempts=0, kind=kind)
    )


class Outbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(
        self,
        body: str,
        *,
        recipient: str | None = None,
        room_id: str | None = None,
        kind: str = TEXT,
    ) -> None:
        async with self._db.transaction() as session:
            enqueue(session, body, recipient=recipient, room_id=room_id, kind=kind)

    async def pending(self, limit: int = BATCH) -> list[PendingMessage]:
        """Messages due now: never tried, or whose time to try again has come; those waiting
        longest first."""
        now = utcnow()
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(OutboxMessage)
                .where(
                    OutboxMessage.delivered_at.is_(None),
                    OutboxMessage.expired_at.is_(None),
                    or_(
                        OutboxMessage.next_attempt_at.is_(None),
                        OutboxMessage.next_attempt_at <= now,
                    ),
                )
                .order_by(
                    func.coalesce(OutboxMessage.next_attempt_at, OutboxMessage.created_at),
                    OutboxMessage.id,
                )
                .limit(limit)
            )
            return [
                PendingMessage(
                    r.id, r.recipient, r.room_id, r.body, r.attempts, r.created_at, r.kind
                )
                for r in rows
            ]

    async def backlog(self) -> tuple[int, datetime | None]:
        """How many messages wait (not delivered, not expired) and since when the oldest has;
        one aggregate over the index ix_outbox_due, for the metrics."""
        async with self._db.transaction() as session:
            waiting = (
                await session.execute(
                    select(func.count(), func.min(OutboxMessage.created_at)).where(
                        OutboxMessage.delivered_at.is_(None), OutboxMessage.expired_at.is_(None)
                    )
                )
            ).one()
            return int(waiting[0]), waiting[1]

    async def mark_delivered(self, message_id: int) -> None:
        async with self._db.transaction() as session:
            row = await session.get(OutboxMessage, message_id)
            if row is not None:
                row.delivered_at = utcnow()
                row.attempts += 1

    async def postpone(self, message_id: int, until: datetime) -> None:
        """Not now, and not a failure (the recipient has not joined their DM yet)."""
        async with self._db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id)
                .values(next_attempt_at=until)
            )

    async def mark_failed(
        self, message_id: int, error: str, retry_at: datetime | None = None
    ) -> int:
        """Not before `retry_at` (None: at once) again. Returns the number of attempts so far;
        at MAX_ATTEMPTS the message expires."""
        async with self._db.transaction() as session:
            row = await session.get(OutboxMessage, message_id)
            if row is None:
                return 0
            row.attempts += 1
            row.last_error = error[:500]
            row.next_attempt_at = retry_at
            if row.attempts >= MAX_ATTEMPTS:
                self._expire(session, row, f"{row.attempts} failed attempts: {row.last_error}")
            return row.attempts

    async def due_now_for(self, recipient: str) -> int:
        """The recipient just joined a room: what waits for them may go at once."""
        async with self._db.transaction() as session:
            result = await session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.recipient == recipient,
                    OutboxMessage.delivered_at.is_(None),
                    OutboxMessage.expired_at.is_(None),
                    OutboxMessage.next_attempt_at.is_not(None),
                )
                .values(next_attempt_at=None)
            )
            return result.rowcount or 0

    @staticmethod
    def _expire(session: AsyncSession, row: OutboxMessage, why: str) -> None:
        row.expired_at = utcnow()
        log.warning("outbox.expired", outbox_id=row.id, recipient=row.recipient,
                    room_id=row.room_id, kind=row.kind, reason=why[:200])  # fmt: skip
        add_entry(
            session, actor=SYSTEM_ACTOR, action="outbox.expired", target=row.recipient,
            room_id=row.room_id, reason=why[:500], detail={"outbox_id": row.id, "kind": row.kind},
        )  # fmt: skip

    async def expire_stale(self, ttl: timedelta = OUTBOX_TTL) -> int:
        """Give up on what could not be delivered in `ttl` (e.g. a DM never joined)."""
        cutoff = utcnow() - ttl
        async with self._db.transaction() as session:
            rows = list(
                await session.scalars(
                    select(OutboxMessage).where(
                        OutboxMessage.delivered_at.is_(None),
                        OutboxMessage.expired_at.is_(None),
                        OutboxMessage.created_at < cutoff,
                    )
                )
            )
            for row in rows:
                self._expire(session, row, f"not deliverable within {ttl.days} days")
            return len(rows)

    async def purge_delivered(self, kept: timedelta = DELIVERED_KEPT) -> int:
        """Delivered and expired messages leave after `kept` (they may hold personal words)."""
        cutoff = utcnow() - kept
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(OutboxMessage).where(
                    or_(OutboxMessage.delivered_at < cutoff, OutboxMessage.expired_at < cutoff)
                )
            )
            return result.rowcount or 0
