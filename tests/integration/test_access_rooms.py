"""Rooms that follow SSO groups and roles (`[[access.rooms]]`), against a real Synapse: members
invited when they link, removed (kicked with the reason, told by DM) when they lose the group or
role, `!access check` and `!access sync [--dry-run]`, rooms where the bot lacks the power, and a
sync under Synapse's default rate limits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.community.access_service import REMOVAL_REASON
from bot.community.outbox import ACCESS, Outbox
from bot.store.models import AuditEntry, Identity, User
from tests.harness.bot import RunningBot, running_bot
from tests.harness.linking import link
from tests.harness.matrix_user import TestUser
from tests.integration.test_bot_core import dm_with
from tests.integration.test_community_ops import body, wait_invited

pytestmark = pytest.mark.synapse


async def gated_room(owner: TestUser, name: str, *, bot_power: str | None = None,
                     **options: Any) -> str:  # fmt: skip
    """An invite-only room the owner created (room v12: the owner outranks everyone)."""
    override = {"power_level_override": {"users": {bot_power: 100}}} if bot_power else {}
    return await owner.create_room(name=name, **override, **options)


async def bring_in_bot(owner: TestUser, bot: RunningBot, *rooms: str) -> None:
    for room in rooms:
        await owner.invite(room, bot.user_id)
    for room in rooms:
        await owner.wait_for_membership(room, bot.user_id, "join", timeout=15)


async def update_access(bot: RunningBot, mxid: str) -> None:
    """What linking and resyncs do when a member's groups or role change: an ACCESS row."""
    assert bot.app is not None and bot.app.courier is not None
    await Outbox(bot.app.db).put("", recipient=mxid, kind=ACCESS)
    bot.app.courier.wake()


async def change(bot: RunningBot, mxid: str, *, groups: list[str] | None = None,
                 role: str | None = None) -> None:  # fmt: skip
    assert bot.app is not None
    async with bot.app.db.transaction() as session:
        if groups is not None:
            await session.execute(
                update(Identity).where(Identity.mxid == mxid).values(groups=groups)
            )
        if role is not None:
            await session.execute(update(User).where(User.mxid == mxid).values(role=role))
    await update_access(bot, mxid)


async def invite_from(user: TestUser, inviter: str, besides: set[str], timeout: float = 15) -> str:
    """Join the room `inviter` invites `user` to that is not one of `besides` (their new DM)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for room_id, room in list(user.client.invited_rooms.items()):
            if room.inviter == inviter and room_id not in besides:
                return await user.join(room_id)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{user.user_id} got no other invite from {inviter}")


def plain(event: dict) -> str:
    return body(event).replace("\\", "")


async def test_members_follow_their_groups_and_roles_in_and_out(synapse, tmp_path):
    owner_account, ann_account = synapse.fresh_account("owner"), synapse.fresh_account("ann")
    bot_account = synapse.fresh_account("bot")
    alias = f"staff-{bot_account.user_id[1:].split(':')[0]}"
    async with (
        await TestUser.login(synapse.base_url, owner_account) as owner,
        await TestUser.login(synapse.base_url, ann_account) as ann,
    ):
        staff = await gated_room(owner, "staff", bot_power=bot_account.user_id, alias=alias)
        mods = await gated_room(owner, "mods", bot_power=bot_account.user_id)
        weak = await gated_room(owner, "weak")  # the bot gets no power there: it cannot kick
        admins = await owner.create_room(name="admins")
        access = {"rooms": [
            {"room": f"#{alias}:{synapse.server_name}", "groups": ["staff"]},
            {"room": mods, "roles": ["moderator", "admin"]},
            {"room": weak, "groups": ["staff"]},
        ]}  # fmt: skip
        extra = {"access": access, "matrix": {"admin_room": admins}}
        async with running_bot(synapse, tmp_path, account=bot_account, admins=[owner.user_id],
                               extra=extra) as bot:  # fmt: skip
            assert bot.app is not None
            await bring_in_bot(owner, bot, admins, staff, mods, weak)

            # Linking with the gated group: invited where the group opens the door, not elsewhere.
            await link(bot.app.db, ann.user_id, groups=("staff",))
            await update_access(bot, ann.user_id)
            await wait_invited(ann, staff)
            await wait_invited(ann, weak)
            await ann.join(staff)
            await ann.join(weak)
            assert mods not in ann.client.invited_rooms

            # A role-gated room: becoming a moderator opens it.
            await change(bot, ann.user_id, role="moderator")
            await wait_invited(ann, mods)
            await ann.join(mods)

            # Group and role gone: removed (a kick, with the reason), told by DM, and the room
            # where the bot cannot kick is reported in the admin room.
            await change(bot, ann.user_id, groups=["devs"], role="user")
            for room in (staff, mods):
                left = await owner.wait_for_membership(room, ann.user_id, "leave", timeout=15)
                assert left["sender"] == bot.user_id
                assert left["content"]["reason"] == REMOVAL_REASON
            notice = await owner.wait_for_event(
                admins, lambda e: "Group-gated rooms" in e["content"]["body"], timeout=15
            )
            assert f"- **weak**: {ann.user_id}: I lack the power to remove members there" in plain(
                notice
            )
            state = await owner.client.room_get_state_event(weak, "m.room.member", ann.user_id)
            assert state.content["membership"] == "join"  # never silently, never by force

            dm = await invite_from(ann, bot.user_id, {staff, mods, weak, admins})
            told = await ann.wait_for_event(
                dm, lambda e: "I removed you from **mods**" in e["content"]["body"], timeout=15
            )
            assert "it is only for members with certain community groups or roles" in body(told)
            await ann.wait_for_event(
                dm, lambda e: "I removed you from **staff**" in e["content"]["body"], timeout=15
            )

            async with bot.app.db.transaction() as session:
                audit = list(await session.execute(
                    select(AuditEntry.actor, AuditEntry.action, AuditEntry.room_id)
                    .where(AuditEntry.action.like("access.%"))
                    .order_by(AuditEntry.id)
                ))  # fmt: skip
            assert [tuple(a) for a in audit] == [
                ("community-bot", "access.invite", staff),
                ("community-bot", "access.invite", weak),
                ("community-bot", "access.invite", mods),
                ("community-bot", "access.remove", staff),
                ("community-bot", "access.remove", mods),
            ]


async def test_check_and_sync_commands(synapse, tmp_path):
    names = ("boss", "mod", "ann", "bob", "carl")
    boss_a, mod_a, ann_a, bob_a, carl_a = (synapse.fresh_account(n) for n in names)
    bot_account = synapse.fresh_account("bot")
    async with (
        await TestUser.login(synapse.base_url, boss_a) as boss,
        await TestUser.login(synapse.base_url, mod_a) as mod,
        await TestUser.login(synapse.base_url, bob_a) as bob,
        await TestUser.login(synapse.base_url, carl_a) as carl,
    ):
        staff = await gated_room(boss, "staff", bot_power=bot_account.user_id,
                                 invite=[bob.user_id])  # fmt: skip
        weak = await gated_room(boss, "weak", invite=[bob.user_id])
        admins = await boss.create_room(name="admins")
        await bob.join(staff)
        await bob.join(weak)
        access = {"rooms": [
            {"room": staff, "groups": ["staff"], "roles": ["admin"]},
            {"room": weak, "groups": ["staff"]},
        ]}  # fmt: skip
        extra = {"access": access, "matrix": {"admin_room": admins}}
        async with running_bot(synapse, tmp_path, account=bot_account, admins=[boss.user_id],
                               extra=extra) as bot:  # fmt: skip
            assert bot.app is not None
            await bring_in_bot(boss, bot, admins, staff, weak)
            await link(bot.app.db, ann_a.user_id, groups=("staff",))
            async with bot.app.db.transaction() as session:
                session.add(User(mxid=mod.user_id, role="moderator", active=True))
            mod_dm, carl_dm = await dm_with(mod, bot.user_id), await dm_with(carl, bot.user_id)

            # Not for members; sync not for moderators.
            refused = await carl.ask(carl_dm, f"!access check {ann_a.user_id}", sender=bot.user_id)
            assert body(refused).startswith("⚠️ I don't know the command `!access`")
            sync = await mod.ask(mod_dm, "!access sync --dry-run", sender=bot.user_id)
            assert body(sync) == "⚠️ `!access sync` is for admins."

            checked = plain(
                await mod.ask(mod_dm, f"!access check {ann_a.user_id}", sender=bot.user_id)
            )
            assert f"{ann_a.user_id}: role **user**, groups from confirmed bindings: `staff`." in (
                checked
            )
            assert "- **staff**: belongs (group staff); not in it → to invite" in checked
            assert "- **weak**: belongs (group staff); not in it → to invite" in checked
            assert "**Difference**: invite to **staff**, **weak**." in checked
            bob_checked = plain(
                await mod.ask(mod_dm, f"!access check {bob.user_id}", sender=bot.user_id)
            )
            assert "- **staff**: does not belong; joined → to remove" in bob_checked
            assert (
                "- **weak**: does not belong; joined — ⚠️ I lack the power to remove members there"
            ) in bob_checked

            # The preview changes nothing.
            preview = plain(await boss.ask(admins, "!access sync --dry-run", sender=bot.user_id))
            assert preview.startswith("**Dry run**, nothing changed: 2 to invite and 1 to remove")
            assert f"- invite 1: {ann_a.user_id}" in preview
            assert f"- remove 1: {bob.user_id}" in preview
            assert "- ⚠️ I lack the power to remove members there: 2 (" in preview
            assert bob.user_id in preview.split("**weak**")[1]
            state = await boss.client.room_get_state_event(staff, "m.room.member", bob.user_id)
            assert state.content["membership"] == "join"
            elsewhere = await boss.ask(await dm_with(boss, bot.user_id), "!access sync",
                                       sender=bot.user_id)  # fmt: skip
            assert body(elsewhere) == "⚠️ `!access sync` works only in the admin room."

            # The sync applies it, and says what it could not do.
            done = plain(await boss.ask(admins, "!access sync", sender=bot.user_id, timeout=30))
            assert done.startswith(
                "**Access sync done**: 2 invited, 1 removed in 2 governed room(s); 1 with problems."
            )
            assert "- ⚠️ I lack the power to remove members there: 2 (" in done
            left = await boss.wait_for_membership(staff, bob.user_id, "leave", timeout=15)
            assert left["sender"] == bot.user_id and left["content"]["reason"] == REMOVAL_REASON
            for room in (staff, weak):
                await boss.wait_for_membership(room, ann_a.user_id, "invite", timeout=15)
            state = await boss.client.room_get_state_event(weak, "m.room.member", bob.user_id)
            assert state.content["membership"] == "join"
            async with bot.app.db.transaction() as session:
                actors = set(await session.scalars(
                    select(AuditEntry.actor).where(AuditEntry.action.like("access.%"))
                ))  # fmt: skip
            assert actors == {boss.user_id}


INVITEES = 10  # an invite is an event too: rc_message (0.2/s, burst 10) applies, besides rc_invites


async def test_a_sync_waits_out_the_invite_rate_limit(synapse_default_limits, tmp_path):
    synapse = synapse_default_limits
    boss_account, bot_account = synapse.fresh_account("boss"), synapse.fresh_account("bot")
    members = [synapse.fresh_account(f"m{i}").user_id for i in range(INVITEES)]
    async with await TestUser.login(synapse.base_url, boss_account) as boss:
        staff = await gated_room(boss, "staff", bot_power=bot_account.user_id)
        admins = await boss.create_room(name="admins")
        extra = {"access": {"rooms": [{"room": staff, "groups": ["staff"]}]},
                 "matrix": {"admin_room": admins}}  # fmt: skip
        async with running_bot(synapse, tmp_path, account=bot_account, admins=[boss.user_id],
                               extra=extra) as bot:  # fmt: skip
            assert bot.app is not None and bot.app.parts is not None
            await bring_in_bot(boss, bot, admins, staff)
            for mxid in members:
                await link(bot.app.db, mxid, groups=("staff",))
            done = plain(await boss.ask(admins, "!access sync", sender=bot.user_id, timeout=60))
            assert done.startswith(f"**Access sync done**: {INVITEES} invited, 0 removed")
            assert bot.app.parts.moderation.actions.rate_limited_count >= 1  # type: ignore[attr-defined]
            response = await boss.client.room_get_state(staff)
            invited = {
                e["state_key"] for e in response.events
                if e["type"] == "m.room.member" and e["content"]["membership"] == "invite"
            }  # fmt: skip
            assert invited == set(members)
