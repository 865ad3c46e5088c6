"""Announcements posted now or on a schedule. Schedules live in the database (as absolute text, so
"in 2h" means the same after a restart); a run missed while the bot was down fires once on start
when it is only a little late, and is skipped (and logged) when it is too late."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

import structlog
from sqlalchemy import select

from bot.community.audit import add_entry
from bot.community.schedules import Schedule, missed_run, parse_schedule
from bot.store.database import Database
from bot.store.models import Announcement, utcnow

log = structlog.get_logger(__name__)

EVERY_ROOM = "all"


@dataclass(frozen=True)
class Planned:
    id: int
    target: str  # a room id, or "all"
    body: str
    schedule: str
    next_run_at: datetime | None
    created_by: str


def _planned(row: Announcement) -> Planned:
    return Planned(row.id, row.target, row.body, row.schedule, row.next_run_at, row.created_by)


class Announcements:
    def __init__(self, db: Database, tz: tzinfo, grace: timedelta) -> None:
        self._db = db
        self.tz = tz
        self._grace = grace

    async def plan(
        self, actor: str, target: str, body: str, schedule: Schedule, *, room_id: str
    ) -> Planned:
        now = utcnow()
        async with self._db.transaction() as session:
            row = Announcement(
                target=target, body=body, schedule=schedule.text, created_by=actor,
                next_run_at=schedule.next_after(now, self.tz), active=True,
            )  # fmt: skip
            session.add(row)
            await session.flush()
            add_entry(session, actor=actor, action="schedule", target=target, room_id=room_id,
                      detail={"id": row.id, "schedule": schedule.text})  # fmt: skip
            return _planned(row)

    async def active(self) -> list[Planned]:
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(Announcement).where(Announcement.active.is_(True)).order_by(Announcement.id)
            )
            return [_planned(r) for r in rows]

    async def cancel(self, announcement_id: int, actor: str, *, room_id: str) -> bool:
        async with self._db.transaction() as session:
            row = await session.get(Announcement, announcement_id)
            if row is None or not row.active:
                return False
            row.active = False
            add_entry(session, actor=actor, action="unschedule", room_id=room_id,
                      detail={"id": announcement_id})  # fmt: skip
            return True

    async def due(self, now: datetime) -> list[Planned]:
        """Announcements to post now. Ones missed by more than the grace period (the bot was
        down) are skipped, logged and moved on to their next run."""
        to_post = []
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(Announcement)
                .where(Announcement.active.is_(True), Announcement.next_run_at <= now)
                .order_by(Announcement.next_run_at)
            )
            for row in rows:
                assert row.next_run_at is not None
                if missed_run(row.next_run_at, now, self._grace) == "skip":
                    log.warning("announcement.missed", id=row.id, due=row.next_run_at.isoformat())
                    self._advance(row, now)
                else:
                    to_post.append(_planned(row))
        return to_post

    async def ran(self, announcement_id: int, now: datetime) -> None:
        async with self._db.transaction() as session:
            row = await session.get(Announcement, announcement_id)
            if row is not None:
                row.last_run_at = now
                self._advance(row, now)

    def _advance(self, row: Announcement, now: datetime) -> None:
        upcoming = parse_schedule(row.schedule, now, self.tz).next_after(now, self.tz)
        row.next_run_at = upcoming
        row.active = upcoming is not None
