"""Which room the bot uses to talk to each user directly."""

from __future__ import annotations

from sqlalchemy import delete

from bot.store.database import Database
from bot.store.models import DirectRoom, utcnow
from bot.store.upsert import upsert


class DirectRooms:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, mxid: str) -> str | None:
        async with self._db.transaction() as session:
            row = await session.get(DirectRoom, mxid)
            return row.room_id if row else None

    async def put(self, mxid: str, room_id: str) -> None:
        async with self._db.transaction() as session:
            await upsert(
                session, DirectRoom, "mxid", mxid=mxid, room_id=room_id, updated_at=utcnow()
            )

    async def drop(self, mxid: str) -> None:
        async with self._db.transaction() as session:
            await session.execute(delete(DirectRoom).where(DirectRoom.mxid == mxid))
