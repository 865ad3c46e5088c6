"""Community operations against a real Synapse: every command by the role that may run it, the
refusals, and the effects checked on the homeserver itself."""

from __future__ import annotations

import asyncio

import pytest
from nio import RoomPreset

from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser
from tests.integration.test_bot_core import dm_with

pytestmark = pytest.mark.synapse


def body(event: dict) -> str:
    return event["content"]["body"]


async def group_room(owner: TestUser, bot_id: str, *others: str, name: str = "community") -> str:
    """A community room the owner runs (public: people join it by themselves, see
    bot/matrix/room_kinds.py), where the bot has full power."""
    room = await owner.create_room(
        invite=[bot_id, *others], name=name, preset=RoomPreset.public_chat,
        power_level_override={"users": {bot_id: 100}},  # room v12: creators are not listed
    )  # fmt: skip
    await owner.wait_for_membership(room, bot_id, "join", timeout=15)
    return room


async def wait_invited(user: TestUser, room: str, timeout: float = 10) -> None:
    """The invite reached the user's client: their latest membership event there is an invite.
    (nio's invited_rooms is not used: it drops a room when a leave comes in the same sync.)"""

    def invited() -> bool:
        mine = [
            e for e in user.events(room)
            if e.get("type") == "m.room.member" and e.get("state_key") == user.user_id
        ]  # fmt: skip
        return bool(mine) and mine[-1].get("content", {}).get("membership") == "invite"

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not invited():
        assert loop.time() < deadline, "the invite never arrived"
        await asyncio.sleep(0.1)


async def test_roles_deactivation_forget_audit_and_stats(synapse, tmp_path):
    admin, mod, member = (synapse.fresh_account(n) for n in ("admin", "mod", "member"))
    async with running_bot(synapse, tmp_path, admins=[admin.user_id]) as bot:
        async with (
            await TestUser.login(synapse.base_url, admin) as a,
            await TestUser.login(synapse.base_url, mod) as m,
            await TestUser.login(synapse.base_url, member) as u,
        ):
            a_dm, m_dm, u_dm = [await dm_with(x, bot.user_id) for x in (a, m, u)]

            # Roles: only admins may set them; nobody grants above their own role.
            assert body(
                await a.ask(a_dm, f"!role {mod.user_id} moderator", sender=bot.user_id)
            ) == (
                f"{mod.user_id} is now **moderator** (was user). Set by hand: their SSO groups "
                f"no longer change it (`!role {mod.user_id} sso` hands it back)."
            )
            refused = await m.ask(m_dm, f"!role {member.user_id} admin", sender=bot.user_id)
            assert body(refused).startswith(
                "⚠️ I don't know the command `!role`"
            )  # hidden from mods
            assert "!role" not in body(await m.ask(m_dm, "!help", sender=bot.user_id))
            assert "!kick" in body(await m.ask(m_dm, "!help", sender=bot.user_id))
            assert "!kick" not in body(await u.ask(u_dm, "!help", sender=bot.user_id))
            bad = await a.ask(a_dm, f"!role {member.user_id} king", sender=bot.user_id)
            assert body(bad) == (
                "⚠️ role must be one of user, moderator, admin, sso, not 'king'. "
                "Usage: `!role <@user> <user|moderator|admin|sso>`"
            )
            itself = await a.ask(a_dm, f"!role {bot.user_id} admin", sender=bot.user_id)
            assert body(itself) == "⚠️ I will not change the role of myself."
            configured = await a.ask(a_dm, f"!role {admin.user_id} user", sender=bot.user_id)
            assert body(configured) == "⚠️ You cannot change the role of yourself."

            # Deactivation: moderators may; the member can then only use help and whoami.
            off = await m.ask(m_dm, f"!deactivate {member.user_id} spamming", sender=bot.user_id)
            assert body(off).startswith(f"{member.user_id} is deactivated")
            assert body(await u.ask(u_dm, "!ping", sender=bot.user_id)).startswith(
                "⚠️ Your account is deactivated"
            )
            assert "role: **user**" in body(await u.ask(u_dm, "!whoami", sender=bot.user_id))
            upward = await m.ask(m_dm, f"!deactivate {admin.user_id}", sender=bot.user_id)
            assert body(upward) == f"⚠️ {admin.user_id} is admin, which outranks you (moderator)."
            assert body(await m.ask(m_dm, f"!activate {member.user_id}", sender=bot.user_id)) == (
                f"{member.user_id} is active again."
            )
            assert body(await u.ask(u_dm, "!ping", sender=bot.user_id)).startswith("Pong!")

            # Listing and details.
            listing = body(await m.ask(m_dm, "!users member", sender=bot.user_id))
            assert listing.startswith("**1 member**, page 1 of 1:")
            assert f"{member.user_id} — not linked, user" in listing
            details = body(await m.ask(m_dm, f"!user {member.user_id}", sender=bot.user_id))
            assert (
                "role **user** (the default: not linked), active." in details
                and "Not linked to a community account." in details
            )
            assert body(await m.ask(m_dm, "!users --page 0", sender=bot.user_id)).startswith(
                "⚠️ --page"
            )

            # Forget: a preview first, then the deed.
            preview = body(await a.ask(a_dm, f"!forget {member.user_id}", sender=bot.user_id))
            assert preview.startswith("I hold nothing about") or "--yes" in preview
            done = body(await a.ask(a_dm, f"!forget {member.user_id} --yes", sender=bot.user_id))
            assert done.startswith(f"Forgotten: {member.user_id}")

            stats = body(await m.ask(m_dm, "!stats", sender=bot.user_id))
            assert stats.startswith("**Community today:**") and "members known" in stats

            audit = body(await a.ask(a_dm, "!audit 10", sender=bot.user_id))
            for action in ("`role`", "`deactivate`", "`activate`", "`forget`"):
                assert action in audit, action
            assert "spamming" in audit
            assert body(await a.ask(a_dm, "!audit 99", sender=bot.user_id)).startswith(
                "⚠️ count must be"
            )


async def test_kick_ban_unban_invite_take_effect_on_the_homeserver(synapse, tmp_path):
    admin, mod, member = (synapse.fresh_account(n) for n in ("owner", "mod", "troll"))
    async with running_bot(synapse, tmp_path, admins=[admin.user_id]) as bot:
        async with (
            await TestUser.login(synapse.base_url, admin) as a,
            await TestUser.login(synapse.base_url, mod) as m,
            await TestUser.login(synapse.base_url, member) as t,
        ):
            room = await group_room(a, bot.user_id, mod.user_id, member.user_id)
            await m.join(room)
            await t.join(room)
            a_dm = await dm_with(a, bot.user_id)
            await a.ask(a_dm, f"!role {mod.user_id} moderator", sender=bot.user_id)
            # A second room where the bot has no power at all.
            powerless = await a.create_room(
                invite=[bot.user_id, member.user_id], name="no-power", preset=RoomPreset.public_chat
            )
            await a.wait_for_membership(powerless, bot.user_id, "join", timeout=15)
            await t.join(powerless)
            await asyncio.sleep(0.5)

            assert body(await t.ask(room, f"!kick {mod.user_id}", sender=bot.user_id)).startswith(
                "⚠️ I don't know the command `!kick`"
            )
            usage = await m.ask(room, "!kick troll", sender=bot.user_id)
            assert body(usage) == (
                "⚠️ 'troll' is not a Matrix user ID (like @alice:example.org). "
                "Usage: `!kick <@user> [reason…] [--room <#room|!id>] [--all]`"
            )
            assert body(await m.ask(room, f"!kick {admin.user_id}", sender=bot.user_id)) == (
                f"⚠️ {admin.user_id} is admin, which outranks you (moderator)."
            )

            # As Element sends a mention: the display name in body, the MXID only in the pill.
            command = await m.send_text(
                room, "!kick Troll flooding",
                formatted_body=f'!kick <a href="https://matrix.to/#/{member.user_id}">Troll</a> flooding',
            )  # fmt: skip
            kicked = await m.wait_for_message(room, sender=bot.user_id, after_event_id=command)
            assert body(kicked) == f"{member.user_id} kicked in community."
            leave = await a.wait_for_membership(room, member.user_id, "leave", timeout=10)
            assert leave["content"].get("reason") == "flooding"

            invited = await m.ask(room, f"!invite {member.user_id} {room}", sender=bot.user_id)
            assert body(invited) == f"Invited {member.user_id} to community."
            await wait_invited(t, room)
            await t.join(room)
            banned = await m.ask(room, f"!ban {member.user_id} --all spam", sender=bot.user_id)
            assert f"{member.user_id} banned in community." in body(banned)
            assert "no-power: I do not have the power to ban there." in body(banned)
            await a.wait_for_membership(room, member.user_id, "ban", timeout=10)
            state = await a.client.room_get_state_event(room, "m.room.member", member.user_id)
            assert state.content["membership"] == "ban"

            unbanned = await m.ask(
                room, f"!unban {member.user_id} --room {room}", sender=bot.user_id
            )
            assert body(unbanned) == f"{member.user_id} unbanned in community."
            await a.wait_for_membership(room, member.user_id, "leave", timeout=10)

            # Nobody is invited into a member's DM with the bot (it holds their login links).
            sneaky = await m.ask(room, f"!invite {member.user_id} {a_dm}", sender=bot.user_id)
            assert body(sneaky) == f"⚠️ {a_dm} is not one of the community rooms I am in."
            # After the unban the member can be invited again, and the invite arrives.
            again = await m.ask(room, f"!invite {member.user_id} {room}", sender=bot.user_id)
            assert body(again) == f"Invited {member.user_id} to community."
            await wait_invited(t, room)

            audit = body(await a.ask(a_dm, "!audit 10", sender=bot.user_id))
            for action in ("`kick`", "`ban`", "`unban`", "`invite`"):
                assert action in audit, action
            assert "flooding" in audit
