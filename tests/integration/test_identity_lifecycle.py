"""Roles that follow the identity provider for the whole membership, against the real
node-oidc-provider (refresh tokens with offline_access) and real Synapse: a group changed at the
provider changes the role at the next resync, an account disabled there drops to user and is marked
stale, and a role set by hand with `!role` survives logins and resyncs until handed back."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.community.identity_sync import Status
from bot.community.login_links import LoginLinks
from bot.community.roles import Role
from bot.store.models import AuditEntry, Identity, User
from bot.store.sealed_tokens import SealedTokens
from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser
from tests.harness.oidc import complete_login
from tests.harness.sso_web import Browser, WebUnderTest
from tests.integration.test_bot_core import dm_with
from tests.integration.test_sso_e2e import sso_options

pytestmark = pytest.mark.synapse


async def sign_in(bot, username: str, mxid: str) -> str:  # type: ignore[no-untyped-def]
    """The member opens a fresh login link and signs in at the provider as `username`; returns
    the web app's final page."""
    db = bot.app.db
    token = await LoginLinks(db, timedelta(minutes=10)).issue(mxid)
    base = bot.config.web.public_url
    web = WebUnderTest(base, db, None, None)  # type: ignore[arg-type]
    browser = Browser()
    try:
        started = await browser.start(web, token, "community")
        assert started.status_code == 303, started.text
        assert "offline_access" in started.headers["location"]
        leaving = await complete_login(browser.http, started.headers["location"], username=username)
        page = await browser.get(leaving.headers["location"])
        assert page.status_code == 200, page.text
        return page.text
    finally:
        await browser.close()


async def stored(bot, mxid: str) -> tuple[User, Identity]:  # type: ignore[no-untyped-def]
    async with bot.app.db.transaction() as session:
        user = await session.get(User, mxid)
        identity = await session.scalar(select(Identity).where(Identity.mxid == mxid))
        session.expunge_all()
    return user, identity


async def audit_actions(bot, target: str) -> list[str]:  # type: ignore[no-untyped-def]
    async with bot.app.db.transaction() as session:
        rows = await session.scalars(
            select(AuditEntry.action).where(AuditEntry.target == target).order_by(AuditEntry.id)
        )
        return list(rows)


async def message_containing(user, room: str, text: str, timeout: float = 15) -> dict:  # type: ignore[no-untyped-def]
    return await user.wait_for_event(room, lambda e: text in e["content"]["body"], timeout=timeout)


def lifecycle_options(oidc_provider, client_id: str, admin: str, admin_room: str) -> dict:  # type: ignore[no-untyped-def]
    options = sso_options(oidc_provider, client_id)
    options["admins"] = [admin]
    options["extra"]["matrix"] = {"admin_room": admin_room}
    options["extra"]["sso"]["resync_interval"] = "1h"
    return options


async def test_roles_follow_the_provider_and_a_disabled_account_goes_stale(
    synapse, oidc_provider, tmp_path
):
    oidc_provider.set_account("dora", name="Dora", groups=["moderators"])
    admin_account, dora_account = synapse.fresh_account("ada"), synapse.fresh_account("dora")
    async with (
        await TestUser.login(synapse.base_url, admin_account) as ada,
        await TestUser.login(synapse.base_url, dora_account) as dora,
    ):
        admin_room = await ada.create_room(name="admins")
        options = lifecycle_options(oidc_provider, "lifecycle-1", ada.user_id, admin_room)
        async with running_bot(synapse, tmp_path, **options) as bot:
            await ada.invite(admin_room, bot.user_id)
            await ada.wait_for_membership(admin_room, bot.user_id, "join", timeout=15)
            dm = await dm_with(dora, bot.user_id)

            page = await sign_in(bot, "dora", dora.user_id)
            assert "role: <strong>moderator</strong>" in page
            user, identity = await stored(bot, dora.user_id)
            assert user.role == "moderator" and user.role_source == "sso"
            # The refresh token is kept, encrypted: the stored text is not a usable token, and
            # the configured key (here the data dir's) opens it.
            assert identity.refresh_token
            tokens = SealedTokens.from_config(None, bot.config.data.dir)
            plain = tokens.open(identity.refresh_token)
            assert plain and plain not in identity.refresh_token

            # The provider drops her from the moderators: the role follows at the next resync.
            oidc_provider.set_account("dora", name="Dora", groups=["members"])
            reply = await ada.ask(admin_room, f"!resync {dora.user_id}", sender=bot.user_id)
            assert "role moderator → **user**" in reply["content"]["body"], reply["content"]
            user, identity = await stored(bot, dora.user_id)
            assert user.role == "user" and identity.groups == ["members"]
            assert identity.synced_at > identity.last_login_at
            await message_containing(dora, dm, "Your role is now **user** (was moderator)")

            # The scheduled run (what the job calls) picks up a change too, once she is due.
            oidc_provider.set_account("dora", name="Dora", groups=["admins"])
            sync = bot.app.parts.identity_sync
            assert await sync.resync_due() == {}  # just read: not due yet
            async with bot.app.db.transaction() as session:
                row = await session.get(Identity, identity.id)
                row.synced_at = row.synced_at - timedelta(hours=1, minutes=1)
            assert await sync.resync_due() == {"changed": 1}
            assert (await stored(bot, dora.user_id))[0].role == "admin"

            # Concurrent resyncs of one member refresh one at a time: a rotated refresh token is
            # never presented twice (which the provider would treat as theft).
            outcomes = await asyncio.gather(*(
                sync.resync_member(dora.user_id, actor=ada.user_id) for _ in range(4)
            ))  # fmt: skip
            assert {o.status for batch in outcomes for o in batch} == {Status.UNCHANGED}

            # The account is disabled at the provider: the refresh is refused.
            oidc_provider.set_account("dora", name="Dora", groups=["admins"], disabled=True)
            reply = await ada.ask(admin_room, f"!resync {dora.user_id}", sender=bot.user_id)
            assert "marked **stale**" in reply["content"]["body"]
            user, identity = await stored(bot, dora.user_id)
            assert user.role == "user" and identity.stale_at is not None
            assert identity.refresh_token is None
            notice = await message_containing(ada, admin_room, "no longer confirms the account")
            assert "Role admin → user" in notice["content"]["body"]
            await message_containing(dora, dm, "no longer confirms your account **dora**")
            whoami = await dora.ask(dm, "!whoami", sender=bot.user_id)
            assert "role: **user**" in whoami["content"]["body"]
            assert "stale: the provider no longer confirms it" in whoami["content"]["body"]
            shown = await ada.ask(admin_room, f"!user {dora.user_id}", sender=bot.user_id)
            assert "stale" in shown["content"]["body"]
            assert "(from SSO groups)" in shown["content"]["body"]
            again = await ada.ask(admin_room, f"!resync {dora.user_id}", sender=bot.user_id)
            assert "already stale" in again["content"]["body"]
            assert {"identity.link", "identity.sync", "identity.stale"} <= set(
                await audit_actions(bot, dora.user_id)
            )

            # Re-enabled, she links again: the binding is confirmed and the groups count again.
            oidc_provider.set_account("dora", name="Dora", groups=["moderators"])
            assert "role: <strong>moderator</strong>" in await sign_in(bot, "dora", dora.user_id)
            user, identity = await stored(bot, dora.user_id)
            assert identity.stale_at is None and identity.refresh_token is not None
            assert user.role == "moderator"


async def test_a_role_set_by_hand_survives_login_and_resync_until_handed_back(
    synapse, oidc_provider, tmp_path
):
    oidc_provider.set_account("eve", name="Eve", groups=["moderators"])
    admin_account, eve_account = synapse.fresh_account("ada"), synapse.fresh_account("eve")
    async with (
        await TestUser.login(synapse.base_url, admin_account) as ada,
        await TestUser.login(synapse.base_url, eve_account) as eve,
    ):
        admin_room = await ada.create_room(name="admins")
        options = lifecycle_options(oidc_provider, "lifecycle-2", ada.user_id, admin_room)
        async with running_bot(synapse, tmp_path, **options) as bot:
            await ada.invite(admin_room, bot.user_id)
            await ada.wait_for_membership(admin_room, bot.user_id, "join", timeout=15)
            assert "role: <strong>moderator</strong>" in await sign_in(bot, "eve", eve.user_id)

            # A demotion by hand: logging in again (still a moderator at the provider) and a
            # resync leave it alone.
            reply = await ada.ask(admin_room, f"!role {eve.user_id} user", sender=bot.user_id)
            assert "is now **user** (was moderator)" in reply["content"]["body"]
            assert "Set by hand" in reply["content"]["body"]
            assert "role: <strong>user</strong>" in await sign_in(bot, "eve", eve.user_id)
            await ada.ask(admin_room, f"!resync {eve.user_id}", sender=bot.user_id)
            user, _ = await stored(bot, eve.user_id)
            assert (user.role, user.role_source) == ("user", "manual")
            shown = await ada.ask(admin_room, f"!user {eve.user_id}", sender=bot.user_id)
            assert "role **user** (set by hand with !role)" in shown["content"]["body"]

            # A promotion by hand survives a login that gives nothing, too.
            oidc_provider.set_account("eve", name="Eve", groups=[])
            await ada.ask(admin_room, f"!role {eve.user_id} moderator", sender=bot.user_id)
            assert "role: <strong>moderator</strong>" in await sign_in(bot, "eve", eve.user_id)

            # Handed back to the provider: its groups (none now) decide at once.
            reply = await ada.ask(admin_room, f"!role {eve.user_id} sso", sender=bot.user_id)
            assert (
                "follows their SSO groups again: **user** (was moderator)"
                in (reply["content"]["body"])
            )
            user, _ = await stored(bot, eve.user_id)
            assert (user.role, user.role_source) == ("user", "sso")
            oidc_provider.set_account("eve", name="Eve", groups=["moderators"])
            await ada.ask(admin_room, f"!resync {eve.user_id}", sender=bot.user_id)
            assert (await stored(bot, eve.user_id))[0].role == Role.MODERATOR.label

            # Everyone at once: in the background, with the summary posted where it was asked.
            reply = await ada.ask(admin_room, "!resync all", sender=bot.user_id)
            assert "Reading the groups of 1 linked member binding(s)" in reply["content"]["body"]
            summary = await ada.wait_for_message(
                admin_room, sender=bot.user_id, timeout=20, after_event_id=reply["event_id"]
            )
            assert "Resync of all linked members done: 1 unchanged." in summary["content"]["body"]
