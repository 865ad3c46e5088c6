"""Login links and bindings, on SQLite and PostgreSQL: the rules, without the web."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bot.community.audit import AuditLog
from bot.community.identity import (
    AlreadyLinkedElsewhere,
    GroupRoles,
    IdentityService,
    VerifiedIdentity,
)
from bot.community.login_links import LinkError, LinkProblem, LoginLinks, hash_token
from bot.community.outbox import Outbox
from bot.community.roles import Role
from bot.community.users import UserService
from bot.store.database import Database
from bot.store.models import Identity, LoginLink, utcnow

ROLES = GroupRoles(admin_groups=("admins",), moderator_groups=("mods",))


def idp(sub: str = "alice-sub", groups: tuple[str, ...] = (), **kw) -> VerifiedIdentity:
    return VerifiedIdentity(
        provider_id="authentik", provider_name="Authentik", issuer="https://auth.example",
        subject=sub, username=kw.get("username", "alice"), email="alice@example.org", groups=groups,
    )  # fmt: skip


@pytest.fixture
def db(migrated_db):
    return migrated_db


async def started(links: LoginLinks, mxid: str, browser: str = "b") -> str:
    """A link as the web app leaves it after the browser started the flow: its hash."""
    token = await links.issue(mxid)
    await links.start(token, browser)
    return hash_token(token)


async def count(db: Database, model) -> int:
    async with db.transaction() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def test_links_are_random_hashed_single_owner_and_replace_older_ones(db):
    links = LoginLinks(db, timedelta(minutes=10))
    first = await links.issue("@alice:x")
    second = await links.issue("@alice:x")
    assert len(second) >= 43 and first != second
    async with db.transaction() as session:
        stored = list(await session.scalars(select(LoginLink.token_hash)))
    assert stored == [hash_token(second)]  # only the hash, and the older link is gone
    with pytest.raises(LinkError) as old:
        await links.inspect(first, None)
    assert old.value.problem is LinkProblem.UNKNOWN

    assert (await links.inspect(second, "browser-a")).mxid == "@alice:x"
    await links.start(second, "browser-a")
    await links.start(second, "browser-a")  # the same browser may start again
    with pytest.raises(LinkError) as other:
        await links.start(second, "browser-b")
    assert other.value.problem is LinkProblem.OTHER_BROWSER


async def test_expired_link(db):
    links = LoginLinks(db, timedelta(minutes=10))
    token = await links.issue("@alice:x")
    async with db.transaction() as session:
        await session.execute(update(LoginLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(LinkError) as expired:
        await links.inspect(token, None)
    assert expired.value.problem is LinkProblem.EXPIRED
    assert await links.purge(older_than=timedelta(0)) == 1


async def test_bind_sets_role_from_groups_audits_and_queues_the_confirmation(db):
    links, identity = LoginLinks(db, timedelta(minutes=10)), IdentityService(db, ["@root:x"])
    token = await links.issue("@alice:x")
    await links.start(token, "b")
    result = await identity.bind(hash_token(token), "b", idp(groups=("mods", "x")), ROLES)
    assert (result.mxid, result.role) == ("@alice:x", Role.MODERATOR)
    assert await UserService(db, []).role_of("@alice:x") is Role.MODERATOR
    [binding] = await identity.bindings_of("@alice:x")
    assert (binding.issuer, binding.subject, binding.groups) == (
        "https://auth.example",
        "alice-sub",
        ("mods", "x"),
    )
    [entry] = await AuditLog(db).recent(5)
    assert (entry.action, entry.target, entry.detail["role"]) == (
        "identity.link",
        "@alice:x",
        "moderator",
    )
    [message] = await Outbox(db).pending()
    assert message.recipient == "@alice:x"
    assert message.body == "You are now linked as **alice** (Authentik), role: moderator."

    with pytest.raises(LinkError) as reused:
        await identity.bind(hash_token(token), "b", idp(), ROLES)
    assert reused.value.problem is LinkProblem.USED


async def test_identity_already_linked_elsewhere_is_refused_and_nothing_changes(db):
    links, identity = LoginLinks(db, timedelta(minutes=10)), IdentityService(db, [])
    await identity.bind(await started(links, "@alice:x"), "b", idp(), ROLES)
    t2 = await links.issue("@mallory:x")
    await links.start(t2, "b")
    with pytest.raises(AlreadyLinkedElsewhere) as taken:
        await identity.bind(hash_token(t2), "b", idp(), ROLES)
    assert taken.value.other_mxid == "@alice:x"
    assert await identity.bindings_of("@mallory:x") == []
    assert (await links.inspect(t2, "b")).mxid == "@mallory:x"  # the link was not used up
    assert await count(db, Identity) == 1


async def test_relinking_replaces_the_same_providers_old_account_and_unlink_resets_role(db):
    links, identity = LoginLinks(db, timedelta(minutes=10)), IdentityService(db, ["@root:x"])
    await identity.bind(await started(links, "@alice:x"), "b", idp(groups=("admins",)), ROLES)
    result = await identity.bind(
        await started(links, "@alice:x"), "b", idp(sub="alice-2", username="alice2"), ROLES
    )
    assert result.replaced_subject == "alice-sub" and result.role is Role.USER
    assert [b.subject for b in await identity.bindings_of("@alice:x")] == ["alice-2"]

    await identity.bind(await started(links, "@root:x"), "b", idp(sub="root", groups=()), ROLES)
    assert await UserService(db, ["@root:x"]).role_of("@root:x") is Role.ADMIN  # bootstrap stays

    removed = await identity.unlink("@alice:x", actor="@alice:x")
    assert [b.subject for b in removed] == ["alice-2"]
    assert await identity.bindings_of("@alice:x") == []
    assert await identity.unlink("@alice:x", actor="@alice:x") == []
    assert [e.action for e in await AuditLog(db).recent(1)] == ["identity.unlink"]


def test_group_roles():
    assert ROLES.role_for(["mods", "admins"]) is Role.ADMIN
    assert ROLES.role_for(["mods"]) is Role.MODERATOR
    assert ROLES.role_for([]) is Role.USER


async def test_a_link_is_used_once_even_by_concurrent_callbacks(db):
    import asyncio

    links, identity = LoginLinks(db, timedelta(minutes=10)), IdentityService(db, [])
    link_hash = await started(links, "@alice:x")
    results = await asyncio.gather(
        *(identity.bind(link_hash, "b", idp(), ROLES) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(
        isinstance(r, LinkError) and r.problem is LinkProblem.USED
        for r in results
        if isinstance(r, Exception)
    )
    assert await count(db, Identity) == 1


async def test_concurrent_binds_of_one_identity_to_two_mxids_give_one_clear_refusal(db):
    import asyncio

    links, identity = LoginLinks(db, timedelta(minutes=10)), IdentityService(db, [])
    first, second = await started(links, "@alice:x"), await started(links, "@mallory:x")
    results = await asyncio.gather(
        identity.bind(first, "b", idp(), ROLES), identity.bind(second, "b", idp(), ROLES),
        return_exceptions=True,
    )  # fmt: skip
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], AlreadyLinkedElsewhere)
    assert await count(db, Identity) == 1


async def test_a_link_never_started_by_a_browser_cannot_be_consumed(db):
    links, identity = LoginLinks(db, timedelta(minutes=10)), IdentityService(db, [])
    token = await links.issue("@alice:x")
    with pytest.raises(LinkError) as refused:
        await identity.bind(hash_token(token), "b", idp(), ROLES)
    assert refused.value.problem is LinkProblem.OTHER_BROWSER
    assert await count(db, Identity) == 0
