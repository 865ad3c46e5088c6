"""The resync service on its own, with providers of our own making, on SQLite and PostgreSQL: what
a provider that fails, lies or refuses does to a binding, how the work is paced, and that a
scheduled run spreads members out. (The real provider's side: test_identity_lifecycle.py.)"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select, update

from bot.community.identity import GroupRoles, IdentityService, VerifiedIdentity
from bot.community.identity_sync import FreshGroups, IdentitySync, Revoked, Status
from bot.community.login_links import LoginLinks, hash_token
from bot.community.roles import Role
from bot.community.users import UserService
from bot.store.models import AuditEntry, Identity, OutboxMessage, utcnow
from bot.store.sealed_tokens import SealedTokens

ROLES = {"idp": GroupRoles(("admins",), ("mods",))}
TOKENS = SealedTokens("a-test-key-of-at-least-thirty-two-characters")


class Provider:
    """Answers from `groups`; `fail` raises like an unreachable provider, `refuse` like one that
    no longer knows the account. Records how many calls were in flight at once."""

    id = "idp"

    def __init__(self) -> None:
        self.groups: dict[str, tuple[str, ...]] = {}
        self.subject_for: dict[str, str] = {}
        self.fail = self.refuse = False
        self.delay = 0.0
        self.in_flight = self.most_in_flight = self.calls = 0
        self.started_at: list[float] = []

    async def fresh_groups(self, refresh_token: str) -> FreshGroups:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.started_at.append(asyncio.get_running_loop().time())
        try:
            await asyncio.sleep(self.delay)
            if self.refuse:
                raise Revoked("invalid_grant")
            if self.fail:
                raise ConnectionError("provider down")
            subject = refresh_token.removeprefix("rt-").rstrip("+")
            return FreshGroups(
                self.groups.get(subject, ()), f"{refresh_token}+", self.subject_for.get(subject)
            )
        finally:
            self.in_flight -= 1


async def bind(db, mxid: str, subject: str, groups: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    links = LoginLinks(db, timedelta(minutes=10))
    token = await links.issue(mxid)
    await links.start(token, "browser")
    identity = VerifiedIdentity(
        "idp", "The IdP", "https://idp.test", subject, username=subject, groups=groups,
        refresh_token=f"rt-{subject}",
    )  # fmt: skip
    service = IdentityService(db, [], tokens=TOKENS, group_roles=ROLES)
    await service.bind(hash_token(token), "browser", identity, ROLES["idp"])


def sync_for(db, provider: Provider, **kw) -> IdentitySync:  # type: ignore[no-untyped-def]
    return IdentitySync(
        db, {"idp": provider}, TOKENS, group_roles=ROLES, bootstrap_admins=[],
        admin_room="!admins:test", **kw,
    )  # fmt: skip


async def test_what_each_provider_answer_does_to_a_binding(migrated_db):
    db, provider = migrated_db, Provider()
    await bind(db, "@mia:test", "mia", ("mods",))
    users = UserService(db, [])
    sync = sync_for(db, provider)

    # Down: nothing changes, the role stays, no audit, tried next time.
    provider.fail = True
    [outcome] = await sync.resync_member("@mia:test", actor="@ada:test")
    assert outcome.status is Status.FAILED and "provider down" in (outcome.problem or "")
    assert await users.role_of("@mia:test") is Role.MODERATOR
    provider.fail = False

    # An answer about someone else is not believed.
    provider.subject_for["mia"] = "mallory"
    [outcome] = await sync.resync_member("@mia:test", actor="@ada:test")
    assert outcome.status is Status.FAILED
    assert await users.role_of("@mia:test") is Role.MODERATOR
    del provider.subject_for["mia"]

    # Same groups: unchanged, no audit entry; the rotated refresh token is kept, sealed.
    provider.groups["mia"] = ("mods",)
    [outcome] = await sync.resync_member("@mia:test", actor="@ada:test")
    assert outcome.status is Status.UNCHANGED
    async with db.transaction() as session:
        row = await session.scalar(select(Identity).where(Identity.mxid == "@mia:test"))
        assert TOKENS.open(row.refresh_token) == "rt-mia+"
        audited = list(await session.scalars(select(AuditEntry.action)))
    assert "identity.sync" not in audited

    # Promoted at the provider.
    provider.groups["mia"] = ("admins",)
    [outcome] = await sync.resync_member("@mia:test", actor="@ada:test")
    assert outcome.role_change == (Role.MODERATOR, Role.ADMIN)

    # Refused: stale, back to user, the member and the admin room are told.
    provider.refuse = True
    [outcome] = await sync.resync_member("@mia:test", actor="@ada:test")
    assert outcome.status is Status.STALE and outcome.role_change == (Role.ADMIN, Role.USER)
    assert await users.role_of("@mia:test") is Role.USER
    async with db.transaction() as session:
        outbox = [(m.recipient, m.room_id) for m in await session.scalars(select(OutboxMessage))]
    assert ("@mia:test", None) in outbox and (None, "!admins:test") in outbox
    # A stale binding is not asked again: the member must log in.
    calls = provider.calls
    [outcome] = await sync.resync_member("@mia:test", actor="@ada:test")
    assert outcome.status is Status.ALREADY_STALE and provider.calls == calls


async def test_a_token_sealed_with_another_key_is_not_sent_anywhere(migrated_db):
    db, provider = migrated_db, Provider()
    await bind(db, "@kim:test", "kim", ("mods",))
    other_key = SealedTokens("another-key-of-at-least-thirty-two-characters!")
    sync = IdentitySync(db, {"idp": provider}, other_key, group_roles=ROLES, bootstrap_admins=[])
    [outcome] = await sync.resync_member("@kim:test", actor="@ada:test")
    assert outcome.status is Status.NO_TOKEN and provider.calls == 0


async def test_runs_are_paced_and_members_come_due_spread_out(migrated_db):
    db, provider = migrated_db, Provider()
    provider.delay = 0.05
    for n in range(10):
        await bind(db, f"@m{n}:test", f"m{n}", ())
    sync = sync_for(db, provider, interval=timedelta(hours=1), batch=4, concurrency=2,
                    batch_pause_s=0.2)  # fmt: skip

    # Just linked: nobody is due.
    assert await sync.resync_due() == {}
    assert provider.calls == 0

    # All read 95 minutes ago... 55 minutes ago: those within the jitter (the last 10% of the
    # interval) are due only when their own fraction says so; all are due after a full interval.
    async with db.transaction() as session:
        await session.execute(update(Identity).values(synced_at=utcnow() - timedelta(minutes=57)))
    partly = await sync.resync_due()
    assert 0 < sum(partly.values()) < 10, partly

    async with db.transaction() as session:
        await session.execute(update(Identity).values(synced_at=utcnow() - timedelta(hours=2)))
    provider.calls, provider.started_at = 0, []
    assert await sync.resync_due() == {"unchanged": 10}
    assert provider.most_in_flight <= 2
    # Three batches (4, 4, 2) with a pause between them.
    starts = provider.started_at
    assert starts[4] - starts[3] >= 0.2 and starts[8] - starts[7] >= 0.2

    # A full run is one at a time, and reports when done.
    assert sync.start_full_run(actor="@ada:test", report_room="!admins:test")
    assert not sync.start_full_run(actor="@ada:test", report_room="!admins:test")
    summary = await sync.wait_full_run()
    assert summary is not None and summary.counts() == {"unchanged": 10}
    async with db.transaction() as session:
        bodies = list(await session.scalars(
            select(OutboxMessage.body).where(OutboxMessage.room_id == "!admins:test")
        ))  # fmt: skip
    assert any("Resync of all linked members done: 10 unchanged." in b for b in bodies)


async def test_revision_0008_keeps_roles_set_by_hand_before_it(migrated_db):
    """Upgrading a database where `!role` was used: those roles stay the admins' to decide."""
    from alembic import command
    from sqlalchemy import text

    from bot.store.migrate import _alembic_config

    def migrate(connection, target: str) -> None:  # type: ignore[no-untyped-def]
        cfg = _alembic_config()
        cfg.attributes["connection"] = connection
        (command.upgrade if target == "head" else command.downgrade)(cfg, target)

    async with migrated_db.engine.begin() as conn:
        await conn.run_sync(migrate, "0007_member_search")
        now = utcnow()
        for mxid, role in (("@set:test", "moderator"), ("@sso:test", "admin")):
            await conn.execute(
                text("INSERT INTO users (mxid, role, active, created_at) "
                     "VALUES (:m, :r, true, :t)"),
                {"m": mxid, "r": role, "t": now},
            )  # fmt: skip
        await conn.execute(
            text("INSERT INTO audit_log (at, actor, action, target, detail) "
                 "VALUES (:t, '@ada:test', 'role', '@set:test', '{}')"),
            {"t": now},
        )  # fmt: skip
        await conn.run_sync(migrate, "head")
        sources = dict((await conn.execute(text("SELECT mxid, role_source FROM users"))).all())
    assert sources == {"@set:test": "manual", "@sso:test": "sso"}
