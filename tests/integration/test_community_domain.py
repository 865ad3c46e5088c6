"""Community rules that need the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from bot.community.announcements import Announcements
from bot.community.chat import ChatService, ChatSettings
from bot.community.identity import IdentityService
from bot.community.members import MemberAdmin
from bot.community.permissions import Party, Refused
from bot.community.roles import Role
from bot.community.schedules import parse_when
from bot.community.users import UserService
from bot.community.welcome import Joiner, WelcomeService, render_greeting
from bot.store.models import (
    ChatMessage,
    Conversation,
    GptUsage,
    Identity,
    Newcomer,
    utcnow,
)
from tests.harness.linking import link


@pytest.fixture
def db(migrated_db):
    return migrated_db


async def test_welcome_once_per_room_and_one_reminder_for_the_still_unlinked(db):
    welcome = WelcomeService(
        db, IdentityService(db, []), rooms=["!lobby:x"], template="Hi {mention}"
    )
    assert await welcome.claim("!lobby:x", ["@a:x", "@b:x", "@a:x"]) == ["@a:x", "@b:x"]
    assert await welcome.claim("!lobby:x", ["@a:x", "@c:x"]) == ["@c:x"]  # a rejoin is not new
    assert await welcome.claim("!other:x", ["@a:x"]) == ["@a:x"]  # another room is
    assert (await welcome.settings("!lobby:x")).enabled and not (
        await welcome.settings("!other:x")
    ).enabled
    await welcome.change("!other:x", "@mod:x", enabled=True, template="Hello {name}")
    other = await welcome.settings("!other:x")
    assert (
        other.enabled
        and other.template == "Hello {name}"
        and other.overridden == {"enabled", "template"}
    )

    await welcome.note_newcomers("!lobby:x", ["@a:x", "@b:x"])
    await link(db, "@b:x")  # b links in the meantime
    assert await welcome.due_reminders(timedelta(hours=1)) == []  # not yet due
    async with db.transaction() as session:
        await session.execute(update(Newcomer).values(joined_at=utcnow() - timedelta(hours=2)))
    assert await welcome.due_reminders(timedelta(hours=1)) == ["@a:x"]
    assert await welcome.due_reminders(timedelta(hours=1)) == []  # once only


def test_greeting_escapes_names_and_mentions_everyone():
    joiners = [Joiner("@a:x", "<b>A</b>"), Joiner("@b:x", "@room"), Joiner("@c:x", None)]
    greeting = render_greeting(
        "Welcome {mention} to {room}! {login_hint}", joiners, {"@a:x"}, "*Lobby*", "!"
    )
    assert greeting.mentions == ("@a:x", "@b:x", "@c:x") and greeting.unlinked == ("@b:x", "@c:x")
    assert (
        "[\\<b\\>A\\</b\\>](https://matrix.to/#/@a:x), [\\@room](https://matrix.to/#/@b:x) and"
        in greeting.markdown
    )
    assert "to \\*Lobby\\*!" in greeting.markdown
    assert greeting.markdown.endswith(
        "If you are new here, send me `!login` to link your community account."
    )
    linked_only = render_greeting("Welcome {name}. {login_hint}", joiners[:1], {"@a:x"}, "L", "!")
    assert linked_only.markdown == "Welcome \\<b\\>A\\</b\\>."


async def test_missed_runs_fire_within_the_grace_and_are_skipped_beyond(db):
    tz = UTC
    announcements = Announcements(db, tz, grace=timedelta(hours=1))
    now = utcnow()
    first, _ = parse_when(["in", "2h"], now, tz)
    second, _ = parse_when(["in", "2h"], now, tz)
    daily, _ = parse_when(["every", "day", "08:30"], now, tz)
    late = await announcements.plan("@mod:x", "!r:x", "a bit late", first, room_id="!r:x")
    lost = await announcements.plan("@mod:x", "all", "too late", second, room_id="!r:x")
    assert await announcements.due(now) == []

    # The bot comes back 30 minutes after both were due: within the grace, they run.
    back = late.next_run_at + timedelta(minutes=30)
    assert {d.id for d in await announcements.due(back)} == {late.id, lost.id}
    await announcements.ran(late.id, back)
    assert late.id not in {p.id for p in await announcements.active()}  # a one-off runs once

    # Three hours after: beyond the grace, skipped (logged) and over.
    assert await announcements.due(back + timedelta(hours=3)) == []
    assert lost.id not in {p.id for p in await announcements.active()}

    # A recurring one that was missed moves on to its next run instead.
    weekly = await announcements.plan("@mod:x", "!r:x", "daily", daily, room_id="!r:x")
    much_later = weekly.next_run_at + timedelta(hours=5)
    assert await announcements.due(much_later) == []
    [moved] = await announcements.active()
    assert moved.next_run_at > much_later and moved.next_run_at - weekly.next_run_at == timedelta(
        days=1
    )
    assert await announcements.cancel(moved.id, "@mod:x", room_id="!r:x")
    assert await announcements.active() == []


async def test_forget_deletes_binding_history_and_usage_but_not_others(db):
    members = MemberAdmin(db, ["@root:x"], "@bot:x")
    await link(db, "@gone:x")
    await link(db, "@stay:x")
    chat = ChatService(
        db, ChatSettings(True, "m", "sys", False, 1000, False, {Role.USER: 0}), model=None,  # type: ignore[arg-type]
        identity=IdentityService(db, []), users=UserService(db, []),
    )  # fmt: skip
    async with db.transaction() as session:
        dm = Conversation(room_id="!dm:x")
        shared = Conversation(room_id="!room:x", thread_root="$t")
        session.add_all([dm, shared])
        await session.flush()
        session.add_all([
            ChatMessage(conversation_id=dm.id, role="user", author="@gone:x", content="secret", tokens=1),
            ChatMessage(conversation_id=dm.id, role="assistant", content="answer", tokens=1),
            ChatMessage(conversation_id=shared.id, role="user", author="@stay:x", content="hi", tokens=1),
            ChatMessage(conversation_id=shared.id, role="user", author="@gone:x", content="mine", tokens=1),
            GptUsage(mxid="@gone:x", day=utcnow().date(), prompt_tokens=5, completion_tokens=5, requests=1),
        ])  # fmt: skip
    await members.set_active(
        Party("@root:x", Role.ADMIN), "@gone:x", False, reason="spam", room_id=None
    )
    with pytest.raises(Refused, match=r"\[roles\] admins"):
        await members.set_active(
            Party("@a2:x", Role.ADMIN), "@root:x", False, reason=None, room_id=None
        )
    preview = await members.forget_preview("@gone:x")
    assert (preview.bindings, preview.messages, preview.usage_days) == (1, 2, 1)
    with pytest.raises(Refused):
        await members.forget(Party("@mod:x", Role.USER), "@root:x", room_id=None)
    await members.forget(Party("@root:x", Role.ADMIN), "@gone:x", room_id="!admin:x")
    async with db.transaction() as session:
        contents = set(await session.scalars(select(ChatMessage.content)))
        assert contents == {"hi"}  # their DM went whole; their turn in the shared thread too
        assert await session.scalar(select(func.count()).select_from(Identity)) == 1
        assert await session.scalar(select(func.count()).select_from(GptUsage)) == 0
    assert await members.forget_preview("@gone:x") == type(preview)(0, 0, 0)
    assert not (await members.details("@gone:x")).active  # forgetting is no amnesty
    with pytest.raises(Refused, match="yourself"):
        await members.forget(Party("@a2:x", Role.ADMIN), "@a2:x", room_id=None)
    assert (await chat.usage_today("@gone:x", Role.USER)).used == 0


async def test_role_changes_keep_an_admin(db):
    members = MemberAdmin(db, [], "@bot:x")
    root = Party("@root:x", Role.ADMIN)
    await members.set_role(Party("@seed:x", Role.ADMIN), "@root:x", Role.ADMIN, room_id=None)
    with pytest.raises(Refused, match="last admin"):
        await members.set_role(Party("@other:x", Role.ADMIN), "@root:x", Role.USER, room_id=None)
    assert await members.set_role(root, "@two:x", Role.ADMIN, room_id=None) is Role.USER
    assert (
        await members.set_role(Party("@two:x", Role.ADMIN), "@root:x", Role.MODERATOR, room_id=None)
        is Role.ADMIN
    )
    assert (await members.details("@root:x")).role is Role.MODERATOR
    stamp = datetime.now(UTC)
    assert (await members.details("@root:x")).created_at <= stamp
