"""`!access` through the executor (roles, where it answers, no configuration) with the real store
and a scripted Matrix side; the long-list rendering."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.commands import access as access_commands
from bot.commands.access import NOT_CONFIGURED, PRIVATE_ONLY, names
from bot.commands.executor import CommandExecutor, Message
from bot.commands.services import LoginSettings, Services
from bot.community.access import GatedRoom, Presence
from bot.community.access_service import AccessService
from bot.community.audit import AuditLog
from bot.community.identity import IdentityService
from bot.community.login_links import LoginLinks
from bot.community.users import UserService
from bot.store.database import Database
from bot.store.migrate import upgrade_to_head
from bot.store.models import User
from tests.unit.test_access_service import BOT, FakeRooms

ADMIN_ROOM = "!admins:x"


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    await upgrade_to_head(database)
    async with database.transaction() as session:
        session.add(User(mxid="@mod:x", role="moderator", active=True))
    yield database
    await database.close()


def executor(db: Database, access: AccessService | None) -> CommandExecutor:
    services = Services(
        users=UserService(db, ["@root:x"]), audit=AuditLog(db),
        identity=IdentityService(db, ["@root:x"]),
        login_links=LoginLinks(db, timedelta(minutes=10)),
        login=LoginSettings("http://127.0.0.1:8080", 10, {}),
        chat=None, members=None, moderation=None, welcome=None,  # type: ignore[arg-type]
        announcements=None, bot_user_id=BOT, access=access,  # type: ignore[arg-type]
    )  # fmt: skip
    return CommandExecutor(access_commands.registry, services, prefix="!",
                           admin_room_id=ADMIN_ROOM)  # fmt: skip


def msg(sender: str, room: str = "!dm:x", *, direct: bool = True) -> Message:
    return Message(sender=sender, room_id=room, event_id="$e", is_direct=direct,
                   origin_server_ts=0)  # fmt: skip


async def test_without_access_rooms_the_command_says_so(db):
    reply = await executor(db, None).run("access check @ann:x", msg("@mod:x"))
    assert reply.markdown == NOT_CONFIGURED
    empty = AccessService(db, [], FakeRooms(), admins=[], bot_user_id=BOT)
    assert (await executor(db, empty).run("access sync", msg("@root:x"))).markdown == (
        NOT_CONFIGURED
    )


async def test_who_may_run_what_and_where(db):
    rooms = FakeRooms()
    rooms.members["!staff:x"]["@bob:x"] = Presence("join")
    service = AccessService(db, [GatedRoom("#staff:x", frozenset({"staff"}))], rooms,
                            admins=["@root:x"], bot_user_id=BOT, admin_room_id=ADMIN_ROOM)  # fmt: skip
    run = executor(db, service).run
    assert (await run("access check @bob:x", msg("@u:x"))).markdown.startswith(
        "⚠️ I don't know the command `!access`"
    )
    public = msg("@mod:x", "!lobby:x", direct=False)
    assert (await run("access check @bob:x", public)).markdown == f"⚠️ {PRIVATE_ONLY}"
    assert (await run("access check", msg("@mod:x"))).markdown.startswith("⚠️ Say whose rooms")
    assert (await run("access sync", msg("@mod:x"))).markdown == "⚠️ `!access sync` is for admins."
    assert (await run("access sync", msg("@root:x"))).markdown == (
        "⚠️ `!access sync` works only in the admin room."
    )
    preview = (await run("access sync --dry-run", msg("@root:x", ADMIN_ROOM))).markdown
    assert preview.startswith("**Dry run**, nothing changed: 0 to invite and 1 to remove")
    assert rooms.done == []
    done = (await run("access sync", msg("@root:x", ADMIN_ROOM))).markdown
    assert done.startswith("**Access sync done**: 0 invited, 1 removed in 1 governed room(s).")
    assert rooms.done == [("remove", "!staff:x", "@bob:x")]


def test_long_lists_are_counted_not_spelled_out():
    members = [f"@m{i:02}:x" for i in range(25)]
    shown = names(members)
    assert shown.endswith("and 15 more") and "m09" in shown and "m10" not in shown
