"""Bind a Matrix ID to an SSO identity directly through the domain, for tests whose subject is not
the login flow itself (that flow has its own tests against real providers and a browser)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete

from bot.community.identity import GroupRoles, IdentityService, VerifiedIdentity
from bot.community.login_links import LoginLinks, hash_token
from bot.store.database import Database
from bot.store.models import OutboxMessage


async def link(db: Database, mxid: str, *, groups: tuple[str, ...] = ()) -> None:
    links = LoginLinks(db, timedelta(minutes=10))
    token = await links.issue(mxid)
    await links.start(token, "test-browser")
    identity = VerifiedIdentity(
        provider_id="test", provider_name="Test SSO", issuer="https://sso.test",
        subject=f"sub-{mxid}", username=mxid[1:].split(":")[0], groups=groups,
    )  # fmt: skip
    await IdentityService(db, []).bind(hash_token(token), "test-browser", identity, GroupRoles())
    # Setup, not the login flow: no "you are now linked" message for the bot to deliver.
    async with db.transaction() as session:
        await session.execute(delete(OutboxMessage).where(OutboxMessage.recipient == mxid))


async def link_url(url: str, mxid: str, **kw) -> None:  # type: ignore[no-untyped-def]
    db = Database(url)
    try:
        await link(db, mxid, **kw)
    finally:
        await db.close()
