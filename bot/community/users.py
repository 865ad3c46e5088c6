"""Community members: their roles and whether they may act at all."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from bot.community.roles import Role
from bot.lru import LRUDict
from bot.store.database import Database
from bot.store.models import User, utcnow

SEEN_EVERY_S = 300.0  # `last seen` is written at most this often per member


@dataclass(frozen=True)
class Caller:
    """What a command or a question needs to know of who sent it, in one read."""

    role: Role
    active: bool
    quota_override: int | None  # `!quota` for this member; None follows the config


class UserService:
    """Roles come from the store; the configured bootstrap admins are always admins."""

    def __init__(self, db: Database, bootstrap_admins: Iterable[str]) -> None:
        self._db = db
        self._admins = frozenset(bootstrap_admins)
        self._seen: LRUDict[str, float] = LRUDict(10_000)  # mxid -> when last recorded

    async def caller(self, mxid: str) -> Caller:
        async with self._db.engine.connect() as conn:  # every command asks: no ORM session
            row = (
                await conn.execute(
                    select(User.role, User.active, User.gpt_daily_quota).where(User.mxid == mxid)
                )
            ).first()
        if row is None:
            role, active, quota = Role.USER, True, None
        else:
            role, active, quota = Role.parse(row.role), row.active, row.gpt_daily_quota
        return Caller(Role.ADMIN if mxid in self._admins else role, active, quota)

    def is_bootstrap_admin(self, mxid: str) -> bool:
        return mxid in self._admins

    async def role_of(self, mxid: str) -> Role:
        if mxid in self._admins:
            return Role.ADMIN
        async with self._db.transaction() as session:
            user = await session.get(User, mxid)
        return Role.parse(user.role) if user else Role.USER

    async def is_active(self, mxid: str) -> bool:
        async with self._db.transaction() as session:
            user = await session.get(User, mxid)
        return user.active if user else True

    async def touch(self, mxid: str) -> None:
        """Remember that the user was seen, creating them on first contact. Written at most
        every SEEN_EVERY_S per member: a command needs no write of its own."""
        now = time.monotonic()
        if now - self._seen.get(mxid, -SEEN_EVERY_S) < SEEN_EVERY_S:
            return
        self._seen[mxid] = now
        async with self._db.transaction() as session:
            user = await session.get(User, mxid)
            if user is None:
                session.add(
                    User(mxid=mxid, role=Role.USER.label, active=True, last_seen_at=utcnow())
                )
            else:
                user.last_seen_at = utcnow()
