"""Shared ban lists and room upgrades against a real Synapse: a policy room with user, glob and
server rules bans the right members and writes the server ACL; withdrawing a rule lifts exactly
its bans (a moderator's own ban stays); `!ban --list` publishes and `!unban` withdraws; an
upgraded room keeps its settings."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from nio import RoomGetStateEventResponse, RoomPreset
from sqlalchemy import select

from bot.store.models import Announcement, AuditEntry, RoomProtection, RoomSettings
from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser

pytestmark = pytest.mark.synapse


def body(event: dict) -> str:
    return event["content"]["body"]


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def state(user: TestUser, room: str, event_type: str, key: str = "") -> dict[str, Any] | None:
    response = await user.client.room_get_state_event(room, event_type, key)
    return response.content if isinstance(response, RoomGetStateEventResponse) else None


async def answer(user: TestUser, room: str, text: str, bot: str, starts: str) -> dict:
    """The bot's reply to `text` that starts with `starts` (the admin room also gets notices)."""
    sent = await user.send_text(room, text)
    return await user.wait_for_event(
        room, lambda e: e.get("sender") == bot and e.get("type") == "m.room.message"
        and body(e).startswith(starts), timeout=20, after_event_id=sent,
    )  # fmt: skip


async def membership(user: TestUser, room: str, mxid: str) -> str | None:
    content = await state(user, room, "m.room.member", mxid)
    return (content or {}).get("membership")


async def becomes(user: TestUser, room: str, mxid: str, wanted: str) -> None:
    async def check() -> bool:
        return await membership(user, room, mxid) == wanted

    await eventually(check, f"{mxid} to be {wanted} in {room}")


async def stays(user: TestUser, room: str, mxid: str, wanted: str, seconds: float = 1.5) -> None:
    await asyncio.sleep(seconds)
    assert await membership(user, room, mxid) == wanted


async def community_room(owner: TestUser, bot_id: str, name: str) -> str:
    room = await owner.create_room(
        invite=[bot_id], name=name, preset=RoomPreset.public_chat,
        power_level_override={"users": {bot_id: 100}},
    )  # fmt: skip
    await owner.wait_for_membership(room, bot_id, "join", timeout=15)
    return room


async def put_rule(owner: TestUser, room: str, kind: str, entity: str, key: str | None = None,
                   content: dict[str, Any] | None = None) -> str:  # fmt: skip
    content = (
        {"entity": entity, "recommendation": "m.ban", "reason": "spam"}
        if content is None else content
    )  # fmt: skip
    response = await owner.client.room_put_state(
        room, f"m.policy.rule.{kind}", content, state_key=key or f"rule:{entity}"
    )
    return response.event_id


async def test_a_policy_room_bans_glob_and_user_rules_and_writes_the_server_acl(synapse, tmp_path):
    tag = secrets.token_hex(2)
    owner_account = synapse.fresh_account("owner", admin=True)
    troll_a, glob1_a, glob2_a, glob3_a, late_a, fine_a = (
        synapse.fresh_account(prefix)
        for prefix in (f"troll{tag}", f"gs{tag}", f"gs{tag}", f"gs{tag}", f"late{tag}", "fine")
    )
    async with (
        await TestUser.login(synapse.base_url, owner_account) as owner,
        await TestUser.login(synapse.base_url, troll_a) as troll,
        await TestUser.login(synapse.base_url, glob1_a) as glob1,
        await TestUser.login(synapse.base_url, glob2_a) as glob2,
        await TestUser.login(synapse.base_url, glob3_a) as glob3,
        await TestUser.login(synapse.base_url, late_a) as late,
        await TestUser.login(synapse.base_url, fine_a) as fine,
    ):
        admins = await owner.create_room(name="admins")
        extra = {"matrix": {"admin_room": admins}}
        async with running_bot(synapse, tmp_path, admins=[owner.user_id], extra=extra) as bot:
            await owner.invite(admins, bot.user_id)
            await owner.wait_for_membership(admins, bot.user_id, "join", timeout=15)
            room_a = await community_room(owner, bot.user_id, "room-a")
            room_b = await community_room(owner, bot.user_id, "room-b")
            for user in (troll, glob1, fine, late):
                await user.join(room_a)
            for user in (glob1, glob2):
                await user.join(room_b)
            # A moderator's own ban first: glob1 in room B.
            manual = await owner.ask(admins, f"!ban {glob1.user_id} by hand --room {room_b}",
                                     sender=bot.user_id)  # fmt: skip
            assert "banned in room-b" in body(manual)

            # Room B's admins deny a server by hand: no list sync takes that away (issue 12).
            own_acl = {"allow": ["*"], "deny": ["mine.example"], "allow_ip_literals": True}
            await owner.client.room_put_state(room_b, "m.room.server_acl", own_acl)

            # The list: a user rule, a glob, server rules (one would hit our own server).
            policy = await owner.create_room(name="coc-list", preset=RoomPreset.public_chat)
            await put_rule(owner, policy, "user", troll.user_id)
            glob_rule = f"@gs{tag}-*:{synapse.server_name}"
            await put_rule(owner, policy, "user", glob_rule)
            await put_rule(owner, policy, "server", "evil.example")
            await put_rule(owner, policy, "server", "local*")  # matches "localhost": spared
            await put_rule(owner, policy, "user", "@nobody:x",
                           content={"entity": fine.user_id, "recommendation": "m.mute"})  # fmt: skip

            # Moderators may not; admins subscribe (in the admin room).
            reply = await answer(owner, admins, f"!lists subscribe {policy} coc", bot.user_id,
                                 "Following")  # fmt: skip
            assert body(reply) == (
                "Following **coc** (coc-list): 2 user and 2 server rules; 3 bans now in force "
                "from it."
            ), body(reply)
            await becomes(owner, room_a, troll.user_id, "ban")
            await becomes(owner, room_a, glob1.user_id, "ban")
            await becomes(owner, room_b, glob2.user_id, "ban")
            assert await membership(owner, room_a, fine.user_id) == "join"  # m.mute: not acted on
            acl = await state(owner, room_a, "m.room.server_acl")
            assert acl == {"allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": True}
            acl = await state(owner, room_b, "m.room.server_acl")
            assert acl == {**own_acl, "deny": ["evil.example", "mine.example"]}
            # The reason names the list and the rule's reason.
            banned = await state(owner, room_a, "m.room.member", troll.user_id)
            assert banned is not None and banned.get("reason") == "ban list coc: spam"

            # A rule appearing later bans at once; a matching member joining later is banned.
            await put_rule(owner, policy, "user", late.user_id)
            await becomes(owner, room_a, late.user_id, "ban")
            await glob3.join(room_a)
            await becomes(owner, room_a, glob3.user_id, "ban")

            # The glob is withdrawn (empty content): exactly its bans are lifted.
            await put_rule(owner, policy, "user", glob_rule, content={})
            await becomes(owner, room_a, glob1.user_id, "leave")
            await becomes(owner, room_b, glob2.user_id, "leave")
            await becomes(owner, room_a, glob3.user_id, "leave")
            await stays(owner, room_b, glob1.user_id, "ban")  # the moderator's own ban
            assert await membership(owner, room_a, troll.user_id) == "ban"
            assert await membership(owner, room_a, late.user_id) == "ban"

            # A redacted rule is withdrawn too.
            troll_rule = await owner.client.room_get_state_event(
                policy, "m.policy.rule.user", f"rule:{troll.user_id}"
            )
            assert isinstance(troll_rule, RoomGetStateEventResponse)
            events = [e for e in owner.events(policy)
                      if e.get("state_key") == f"rule:{troll.user_id}"]  # fmt: skip
            await owner.client.room_redact(policy, events[-1]["event_id"], reason="appeal")
            await becomes(owner, room_a, troll.user_id, "leave")

            # The server rule withdrawn: the ACL follows (allowing everyone).
            await put_rule(owner, policy, "server", "evil.example", content={})

            async def acl_emptied() -> bool:
                acl = await state(owner, room_a, "m.room.server_acl")
                return acl is not None and acl.get("deny") == []

            await eventually(acl_emptied, "the ACL to lose evil.example")

            async def own_deny_kept() -> bool:
                return await state(owner, room_b, "m.room.server_acl") == own_acl

            await eventually(own_deny_kept, "room B's ACL to keep only its own deny")

            # Unsubscribing by an alias the bot is not in looks it up; it never joins.
            stray = await owner.create_room(name="stray", preset=RoomPreset.public_chat,
                                            alias=f"stray{tag}")  # fmt: skip
            refused = await answer(owner, admins,
                                   f"!lists unsubscribe #stray{tag}:{synapse.server_name}",
                                   bot.user_id, "⚠️")  # fmt: skip
            assert "I do not follow a ban list" in body(refused), body(refused)
            await asyncio.sleep(0.5)
            assert await membership(owner, stray, bot.user_id) is None

            shown = body(await answer(owner, admins, "!lists show", bot.user_id, "**Ban"))
            assert shown.startswith("**Ban lists I follow:**") and "**coc**" in shown
            assert "1 user, 1 server" in shown and "1 bans in force" in shown  # late's

            assert bot.app is not None
            async with bot.app.db.transaction() as session:
                actions = list(await session.scalars(select(AuditEntry.action)))
            assert actions.count("lists.ban") == 5  # troll, glob1, glob2, late, glob3
            assert actions.count("lists.unban") == 4  # glob1, glob2, glob3, troll
            assert "lists.subscribe" in actions and "lists.server_acl" in actions
            notices = "\n".join(body(e) for e in owner.events(admins)
                                if e.get("sender") == bot.user_id
                                and e.get("type") == "m.room.message")  # fmt: skip
            assert "Server ACL of room-a now denies `evil.example`" in notices
            assert "Not applied (they would cut off our own server): `local*`" in notices
            assert f"{glob1.user_id} unbanned in room-a" in notices

            gone = await answer(owner, admins, "!lists unsubscribe coc", bot.user_id, "No longer")
            assert body(gone).startswith("No longer following **coc**")
            assert await membership(owner, room_a, late.user_id) == "ban"  # bans stay


async def test_ban_with_list_publishes_and_unban_withdraws(synapse, tmp_path):
    owner_account, mod_account = synapse.fresh_account("owner"), synapse.fresh_account("mod")
    rude_account = synapse.fresh_account("rude")
    async with (
        await TestUser.login(synapse.base_url, owner_account) as owner,
        await TestUser.login(synapse.base_url, mod_account) as mod,
        await TestUser.login(synapse.base_url, rude_account) as rude,
    ):
        admins = await owner.create_room(name="admins")
        extra = {"matrix": {"admin_room": admins}}
        async with running_bot(synapse, tmp_path, admins=[owner.user_id], extra=extra) as bot:
            await owner.invite(admins, bot.user_id)
            await owner.wait_for_membership(admins, bot.user_id, "join", timeout=15)
            room_a = await community_room(owner, bot.user_id, "room-a")
            room_b = await community_room(owner, bot.user_id, "room-b")
            for user in (mod, rude):
                await user.join(room_a)
            await rude.join(room_b)
            ours = await owner.create_room(
                name="our-list", preset=RoomPreset.public_chat,
                power_level_override={"users": {bot.user_id: 100}},
            )  # fmt: skip
            reply = await answer(owner, admins, f"!lists subscribe {ours} ours", bot.user_id,
                                 "Following")  # fmt: skip
            assert body(reply).startswith("Following **ours**")
            await owner.ask(admins, f"!role {mod.user_id} moderator", sender=bot.user_id)

            banned = await mod.ask(room_a, f"!ban {rude.user_id} rude words --list ours",
                                   sender=bot.user_id)  # fmt: skip
            assert body(banned) == (
                f"{rude.user_id} banned in room-a.\n\nPublished a ban rule for {rude.user_id} on "
                "the list **ours**: it applies in every community room."
            )
            rule = await state(owner, ours, "m.policy.rule.user", f"rule:{rude.user_id}")
            assert rule == {"entity": rude.user_id, "reason": "rude words",
                            "recommendation": "m.ban"}  # fmt: skip
            await becomes(owner, room_a, rude.user_id, "ban")  # by hand
            await becomes(owner, room_b, rude.user_id, "ban")  # by the rule

            unknown = await mod.ask(room_a, f"!ban {rude.user_id} --list nope", sender=bot.user_id)
            assert "I do not follow a ban list nope." in body(unknown)

            unbanned = await mod.ask(room_a, f"!unban {rude.user_id}", sender=bot.user_id)
            assert body(unbanned) == (
                f"{rude.user_id} unbanned in room-a.\n\nWithdrew the ban rule for "
                f"{rude.user_id} from **ours**: the bans it caused are lifted."
            )
            assert await state(owner, ours, "m.policy.rule.user", f"rule:{rude.user_id}") == {}
            await becomes(owner, room_a, rude.user_id, "leave")
            await becomes(owner, room_b, rude.user_id, "leave")


async def test_an_upgraded_room_keeps_its_settings(synapse, tmp_path):
    owner_account = synapse.fresh_account("owner", admin=True)
    bot_account = synapse.fresh_account("bot")
    async with await TestUser.login(synapse.base_url, owner_account) as owner:
        admins = await owner.create_room(name="admins")
        room = await owner.create_room(
            name="lounge", preset=RoomPreset.public_chat,
            power_level_override={"users": {bot_account.user_id: 100}},
        )  # fmt: skip
        extra = {"matrix": {"admin_room": admins, "community_rooms": [room]},
                 "welcome": {"rooms": [room]}}  # fmt: skip
        async with running_bot(synapse, tmp_path, account=bot_account, admins=[owner.user_id],
                               extra=extra) as bot:  # fmt: skip
            for r in (admins, room):
                await owner.invite(r, bot.user_id)
                await owner.wait_for_membership(r, bot.user_id, "join", timeout=15)
            template = "Hello {mention}, welcome to the lounge"
            set_welcome = await owner.ask(room, f"!welcome set {template}", sender=bot.user_id)
            assert body(set_welcome).startswith("New welcome for this room")
            scheduled = await answer(owner, admins, f"!schedule every monday 09:00 {room} Weekly",
                                     bot.user_id, "Scheduled")  # fmt: skip
            assert body(scheduled).startswith("Scheduled #")
            assert bot.app is not None
            db = bot.app.db
            async with db.transaction() as session:
                settings = await session.get(RoomSettings, room)
                assert settings is not None
                settings.gpt_prompt = "You are the lounge's helper."
                session.add(RoomProtection(room_id=room, protection="flood",
                                           settings={"max_messages": 7}))  # fmt: skip

            async with httpx.AsyncClient() as http:
                response = await http.post(
                    f"{synapse.base_url}/_matrix/client/v3/rooms/{room}/upgrade",
                    json={"new_version": "12"},
                    headers={"Authorization": f"Bearer {owner.client.access_token}"},
                )
            assert response.status_code == 200, response.text
            new_room = response.json()["replacement_room"]
            await owner.wait_for_membership(new_room, bot.user_id, "join", timeout=20)
            notice = await owner.wait_for_event(
                admins, lambda e: e.get("sender") == bot.user_id
                and "was upgraded" in e["content"].get("body", ""), timeout=20,
            )  # fmt: skip
            assert f"I joined the new room `{new_room}`" in body(notice)
            assert "room_settings (1)" in body(notice) and "room_protections (1)" in body(notice)

            shown = await owner.ask(new_room, "!welcome show", sender=bot.user_id)
            assert body(shown) == (
                f"Welcomes in this room: **on**. Template (from this room): `{template}`"
            )
            async with db.transaction() as session:
                carried = await session.get(RoomSettings, new_room)
                assert carried is not None and carried.gpt_prompt == "You are the lounge's helper."
                protection = await session.get(RoomProtection, (new_room, "flood"))
                assert protection is not None and protection.settings == {"max_messages": 7}
                targets = list(await session.scalars(select(Announcement.target)))
                assert targets == [new_room]
                audit = list(await session.scalars(
                    select(AuditEntry).where(AuditEntry.action == "room.upgrade")
                ))  # fmt: skip
                assert [(a.room_id, a.target) for a in audit] == [(room, new_room)]
            actions = bot.app.parts.moderation.actions  # type: ignore[union-attr]
            assert actions.community_rooms() == [new_room]
            assert bot.app.parts.welcome.rooms == frozenset({new_room})  # type: ignore[union-attr]
            # The old id, in a command, means the new room.
            again = await answer(owner, admins, f"!schedule every friday 17:00 {room} Weekend",
                                 bot.user_id, "Scheduled")  # fmt: skip
            assert "in lounge" in body(again)

            # After a restart the configured (old) id still means the new room.
            await bot.restart()
            actions = bot.app.parts.moderation.actions  # type: ignore[union-attr]
            assert actions.community_rooms() == [new_room]
            assert bot.app.parts.welcome.rooms == frozenset({new_room})  # type: ignore[union-attr]
            assert bot.app is not None
            async with bot.app.db.transaction() as session:
                ups = list(await session.scalars(
                    select(AuditEntry).where(AuditEntry.action == "room.upgrade")
                ))  # fmt: skip
            assert len(ups) == 1  # the tombstone seen again after the restart changes nothing


async def test_invites_to_rooms_and_from_members_the_lists_ban_are_refused(synapse, tmp_path):
    owner_account, spammer_account = synapse.fresh_account("owner"), synapse.fresh_account("spam")
    async with (
        await TestUser.login(synapse.base_url, owner_account) as owner,
        await TestUser.login(synapse.base_url, spammer_account) as spammer,
    ):
        admins = await owner.create_room(name="admins")
        extra = {"matrix": {"admin_room": admins}}
        async with running_bot(synapse, tmp_path, admins=[owner.user_id], extra=extra) as bot:
            await owner.invite(admins, bot.user_id)
            await owner.wait_for_membership(admins, bot.user_id, "join", timeout=15)
            banned_room = await owner.create_room(name="banned")
            policy = await owner.create_room(name="room-list", preset=RoomPreset.public_chat)
            await put_rule(owner, policy, "room", banned_room)
            await put_rule(owner, policy, "user", spammer.user_id)
            await answer(owner, admins, f"!lists subscribe {policy} rooms", bot.user_id,
                         "Following")  # fmt: skip

            await owner.invite(banned_room, bot.user_id)  # a room the list bans
            await becomes(owner, banned_room, bot.user_id, "leave")
            spam_room = await spammer.create_room(name="spam", invite=[bot.user_id])
            await becomes(spammer, spam_room, bot.user_id, "leave")  # an inviter the list bans
            fine_room = await owner.create_room(name="fine", invite=[bot.user_id])
            await owner.wait_for_membership(fine_room, bot.user_id, "join", timeout=15)
