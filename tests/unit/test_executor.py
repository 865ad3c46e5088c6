"""The executor's rules — role, admin room, deactivation, usage — with the real store (SQLite)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.commands.executor import CommandExecutor, Message
from bot.commands.general import registry as general
from bot.commands.registry import Arg, Kind, Registry, merge
from bot.commands.reply import Reply
from bot.commands.services import LoginSettings, Services
from bot.community.audit import AuditLog
from bot.community.identity import IdentityService
from bot.community.login_links import LoginLinks
from bot.community.roles import Role
from bot.community.users import UserService
from bot.store.database import Database
from bot.store.migrate import upgrade_to_head
from bot.store.models import User

ADMIN_ROOM = "!admins:x"
extra = Registry()


@extra.command("warn", help="Warn someone.", role=Role.MODERATOR, args=[Arg("user", Kind.USER)])
async def warn(ctx, args):
    return Reply(f"warned {args.user}")


@extra.command("wipe", help="Wipe everything.", role=Role.ADMIN)
async def wipe(ctx, args):
    return Reply("wiped")


@pytest.fixture
async def setup(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    await upgrade_to_head(db)
    async with db.transaction() as session:
        session.add(User(mxid="@mod:x", role="moderator", active=True))
        session.add(User(mxid="@gone:x", role="user", active=False))
    users = UserService(db, bootstrap_admins=["@root:x"])
    services = Services(
        users=users,
        audit=AuditLog(db),
        identity=IdentityService(db, ["@root:x"]),
        login_links=LoginLinks(db, timedelta(minutes=10)),
        login=LoginSettings("http://127.0.0.1:8080", 10, {}),
        chat=None,  # type: ignore[arg-type]  # no command here talks to the assistant
        members=None,  # type: ignore[arg-type]
        moderation=None,  # type: ignore[arg-type]
        welcome=None,  # type: ignore[arg-type]
        announcements=None,  # type: ignore[arg-type]
        bot_user_id="@bot:x",
    )
    executor = CommandExecutor(
        merge(general, extra), services, prefix="!", admin_room_id=ADMIN_ROOM
    )
    yield executor
    await db.close()


def msg(sender: str, room: str = "!r:x") -> Message:
    return Message(sender=sender, room_id=room, event_id="$e", is_direct=False, origin_server_ts=0)


async def test_help_lists_only_what_the_caller_may_run(setup):
    user_help = (await setup.run("help", msg("@u:x"))).markdown
    mod_help = (await setup.run("help", msg("@mod:x"))).markdown
    admin_help = (await setup.run("help", msg("@root:x"))).markdown
    assert "!ping" in user_help and "!warn" not in user_help and "!wipe" not in user_help
    assert "!warn" in mod_help and "!wipe" not in mod_help
    assert "!warn" in admin_help and "!wipe" in admin_help


async def test_commands_above_the_callers_role_look_unknown(setup):
    reply = await setup.run("warn @a:x", msg("@u:x"))
    assert reply.markdown.startswith("⚠️ I don't know the command `!warn`.")
    details = await setup.run("help warn", msg("@u:x"))
    assert details.markdown == "⚠️ There is no command `!warn`. Send `!help` for the list."
    assert (await setup.run("warn @a:x", msg("@mod:x"))).markdown == "warned @a:x"


async def test_admin_commands_only_in_the_admin_room(setup):
    elsewhere = await setup.run("wipe", msg("@root:x"))
    assert elsewhere.markdown == "⚠️ `!wipe` works only in the admin room."
    assert (await setup.run("wipe", msg("@root:x", ADMIN_ROOM))).markdown == "wiped"
    # Moderator commands work in any room.
    assert (await setup.run("warn @a:x", msg("@mod:x"))).markdown == "warned @a:x"


async def test_deactivated_users_can_only_ask_for_help(setup):
    assert "!ping" in (await setup.run("help", msg("@gone:x"))).markdown
    refused = await setup.run("ping", msg("@gone:x"))
    assert refused.markdown.startswith("⚠️ Your account is deactivated")


async def test_bad_arguments_get_the_usage_line(setup):
    reply = await setup.run("warn bob", msg("@mod:x"))
    assert reply.markdown == (
        "⚠️ 'bob' is not a Matrix user ID (like @alice:example.org). Usage: `!warn <@user>`"
    )


async def test_untrusted_command_names_are_shown_literally(setup):
    reply = await setup.run("<b>x</b>", msg("@u:x"))
    assert "`!<b>x</b>`" in reply.markdown
