"""Community members: their roles and whether they may act at all."""

from __future__ import annotations

from collections.abc import Iterable

from bot.community.roles import Role
from bot.store.database import Database
from bot.store.models import User, utcnow


class UserService:
    """Roles come from the store; the configured bootstrap admins are always admins."""

    def __init__(self, db: Database, bootstrap_admins: Iterable[str]) -> None:
        self._db = db
        self._admins = frozenset(bootstrap_admins)

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
        """Remember that the user was seen, creating them on first contact."""
        async with self._db.transaction() as session:
            user = await session.get(User, mxid)
            if user is None:
                session.add(
                    User(mxid=mxid, role=Role.USER.label, active=True, last_seen_at=utcnow())
                )
            else:
                user.last_seen_at = utcnow()
