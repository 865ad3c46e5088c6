"""One-time login links: 256 random bits, stored only as a hash, bound to one Matrix ID, expiring,
used once, and continued only by the browser that started the flow."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.database import Database
from bot.store.models import LoginLink, utcnow


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LinkProblem(Enum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"
    OTHER_BROWSER = "other_browser"


class LinkError(Exception):
    def __init__(self, problem: LinkProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


@dataclass(frozen=True)
class LinkView:
    mxid: str
    expires_at: datetime


def _check(link: LoginLink | None, browser_id: str | None) -> LoginLink:
    if link is None:
        raise LinkError(LinkProblem.UNKNOWN)
    if link.used_at is not None:
        raise LinkError(LinkProblem.USED)
    if link.expires_at <= utcnow():
        raise LinkError(LinkProblem.EXPIRED)
    if link.browser_hash is not None and (
        browser_id is None or not secrets.compare_digest(link.browser_hash, hash_token(browser_id))
    ):
        raise LinkError(LinkProblem.OTHER_BROWSER)
    return link


async def consume(session: AsyncSession, token_hash: str, browser_id: str) -> LoginLink:
    """Use up a link inside the caller's transaction. One conditional UPDATE does check and use
    at once, so two concurrent callbacks cannot both succeed, on SQLite as on PostgreSQL."""
    now = utcnow()
    result = await session.execute(
        update(LoginLink)
        .where(
            LoginLink.token_hash == token_hash,
            LoginLink.used_at.is_(None),
            LoginLink.expires_at > now,
            LoginLink.browser_hash == hash_token(browser_id),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    link = await session.get(LoginLink, token_hash, populate_existing=True)
    if result.rowcount != 1:
        _check(link, browser_id)  # raises the precise problem
        raise LinkError(LinkProblem.OTHER_BROWSER)  # never started by a browser
    assert link is not None
    return link


class LoginLinks:
    def __init__(self, db: Database, ttl: timedelta) -> None:
        self._db = db
        self._ttl = ttl

    async def issue(self, mxid: str) -> str:
        """A fresh token for `mxid`; older unused links of theirs stop working."""
        token = secrets.token_urlsafe(32)
        async with self._db.transaction() as session:
            await session.execute(
                delete(LoginLink).where(LoginLink.mxid == mxid, LoginLink.used_at.is_(None))
            )
            session.add(
                LoginLink(token_hash=hash_token(token), mxid=mxid, expires_at=utcnow() + self._ttl)
            )
        return token

    async def inspect(self, token: str, browser_id: str | None) -> LinkView:
        async with self._db.transaction() as session:
            link = _check(await session.get(LoginLink, hash_token(token)), browser_id)
            return LinkView(link.mxid, link.expires_at)

    async def start(self, token: str, browser_id: str) -> LinkView:
        """The first browser to start a flow with this link owns it from then on."""
        async with self._db.transaction() as session:
            link = _check(
                await session.get(LoginLink, hash_token(token), with_for_update=True), browser_id
            )
            if link.browser_hash is None:
                link.browser_hash = hash_token(browser_id)
            return LinkView(link.mxid, link.expires_at)

    async def purge(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Forget links that expired (or were used) long enough ago."""
        cutoff = utcnow() - older_than
        async with self._db.transaction() as session:
            result = await session.execute(delete(LoginLink).where(LoginLink.expires_at < cutoff))
            return result.rowcount or 0
