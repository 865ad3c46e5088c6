"""Welcoming newcomers and scheduled announcements, against a real Synapse."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser
from tests.integration.test_bot_core import wait_for_invite_and_join
from tests.integration.test_community_ops import body, group_room

pytestmark = pytest.mark.synapse

FAKE_SSO = {"sso": {"providers": [{
    "id": "community", "name": "Community SSO", "issuer": "http://127.0.0.1:9/never-contacted",
    "client_id": "x", "client_secret": "y",
}]}, "welcome": {"batch_window": "6s"}}  # fmt: skip


def welcomes(user: TestUser, room: str, bot_id: str) -> list[dict]:
    return [e for e in user.events(room) if e["sender"] == bot_id and e["type"] == "m.room.message"
            and e["content"]["body"].startswith("Welcome ")]  # fmt: skip


async def settle(seconds: float = 3.0) -> None:
    await asyncio.sleep(seconds)


async def join_as(
    synapse, owner: TestUser, room: str, name: str, display: str | None = None
) -> TestUser:
    account = synapse.fresh_account(name)
    user = await TestUser.login(synapse.base_url, account)
    if display is not None:
        await user.client.set_displayname(display)
    await owner.invite(room, account.user_id)  # done at the homeserver once this returns
    await user.join(room)
    return user


async def test_newcomers_are_welcomed_once_in_batches_with_safe_names(synapse, tmp_path):
    owner = synapse.fresh_account("owner")
    async with running_bot(synapse, tmp_path, admins=[owner.user_id], extra=FAKE_SSO) as bot:
        async with await TestUser.login(synapse.base_url, owner) as o:
            room = await group_room(o, bot.user_id, name="Lobby")
            assert (
                body(await o.ask(room, "!welcome on", sender=bot.user_id))
                == "Welcomes are now **on** in this room."
            )

            # One newcomer: a pill that notifies, the login hint, and the link by DM.
            ann = await join_as(synapse, o, room, "ann", display="Ann")
            try:
                [greeting] = [
                    await o.wait_for_event(
                        room,
                        lambda e: e["content"].get("body", "").startswith("Welcome "),
                        timeout=15,
                    )
                ]
                content = greeting["content"]
                assert content["msgtype"] == "m.text"
                assert content["m.mentions"] == {"user_ids": [ann.user_id]}
                assert f'<a href="https://matrix.to/#/{ann.user_id}"' in content["formatted_body"]
                assert (
                    content["body"]
                    == "Welcome Ann to Lobby! Send me `!login` to link your community account."
                )
                dm = await wait_for_invite_and_join(ann, bot.user_id)
                link = await ann.wait_for_message(dm, sender=bot.user_id, timeout=15)
                assert body(link).startswith("Welcome! To take part, link your Matrix account")
                assert re.search(r"<http://127\.0\.0\.1:\d+/login/[\w-]{43,}>", body(link))

                # A display-name change and a rejoin are not new arrivals.
                await ann.client.set_displayname("Ann the Second")
                # Synapse spreads a name change to the rooms in the background: let it land
                # before leaving, or it may join her again (the room is public).
                await o.wait_for_event(
                    room,
                    lambda e: (
                        e["type"] == "m.room.member"
                        and e["content"].get("displayname") == "Ann the Second"
                    ),
                )
                await ann.leave(room)
                await o.invite(room, ann.user_id)
                await ann.join(room)
                await settle(8)
                assert len(welcomes(o, room, bot.user_id)) == 1
            finally:
                await ann.close()

            # A burst of 20 joins within the window: one message mentioning each once.
            accounts = [synapse.fresh_account(f"burst{i}") for i in range(20)]
            users = [await TestUser.login(synapse.base_url, a) for a in accounts]
            try:
                for u in users:
                    await o.invite(room, u.user_id)
                await asyncio.gather(*(u.join(room) for u in users))
                await settle(8)
                burst = welcomes(o, room, bot.user_id)[1:]
                assert len(burst) == 1, f"{len(burst)} messages for 20 joins"
                mentioned = [m for e in burst for m in e["content"]["m.mentions"]["user_ids"]]
                assert sorted(mentioned) == sorted(a.user_id for a in accounts)
            finally:
                for u in users:
                    await u.close()

            # Hostile display names come out as text, never as markup or a room ping.
            hostile = {
                "html": "<b>bold</b><img src=x onerror=alert(1)>",
                "ping": "@room everyone look",
                "long": "x" * 250,  # Synapse caps display names at 256
                "rtl": "\u202egnirts desrever",
            }
            guests = [
                await join_as(synapse, o, room, key, display=name) for key, name in hostile.items()
            ]
            try:
                await settle(8)
                html = " ".join(
                    e["content"]["formatted_body"] for e in welcomes(o, room, bot.user_id)[-2:]
                )
                assert (
                    "<b>" not in html and "<img" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
                )
                for e in welcomes(o, room, bot.user_id)[-2:]:
                    assert "room" not in e["content"]["m.mentions"]  # never an @room notification
                assert "x" * 250 in html
                assert "\u202egnirts desrever" in html
            finally:
                for g in guests:
                    await g.close()


async def test_a_schedule_fires_once_and_schedules_survive_a_restart(synapse, tmp_path):
    owner = synapse.fresh_account("owner")
    async with running_bot(synapse, tmp_path, admins=[owner.user_id]) as bot:
        async with await TestUser.login(synapse.base_url, owner) as o:
            # A group room: a private room of just the owner and the bot would count as a DM.
            room = await group_room(
                o, bot.user_id, synapse.fresh_account("reader").user_id, name="News"
            )
            usage = await o.ask(room, "!schedule sometime #x:y hi", sender=bot.user_id)
            assert body(usage).startswith("⚠️ I don't understand 'sometime'")
            assert body(usage).endswith("Usage: `!schedule <when> <#room|!id|all> <message…>`")

            planned = await o.ask(
                room, f"!schedule in 2s {room} **Stand-up** in five minutes", sender=bot.user_id
            )
            assert body(planned).startswith("Scheduled #1: once on ")
            post = await o.wait_for_event(
                room,
                lambda e: e["content"].get("body") == "**Stand-up** in five minutes",
                timeout=15,
            )
            assert post["content"]["formatted_body"] == "<strong>Stand-up</strong> in five minutes"
            await settle(2)
            assert (
                sum(
                    e["content"].get("body") == "**Stand-up** in five minutes"
                    for e in o.events(room)
                )
                == 1
            )

            weekly = await o.ask(
                room, "!schedule every monday 09:00 all Weekly notes are up", sender=bot.user_id
            )
            assert body(weekly).startswith(
                "Scheduled #2: every Monday at 09:00 (UTC), in every community room."
            )
            command = await o.send_text(room, f"!announce {room} Doors open!")
            await o.wait_for_event(room, lambda e: e["content"].get("body") == "Doors open!")
            await o.wait_for_event(
                room,
                lambda e: (
                    e["content"].get("body") == "Announced in News."
                    and e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == command
                ),
            )
            await bot.restart()
            listing = await o.ask(room, "!schedules", sender=bot.user_id)
            assert "#2 every Monday at 09:00 (UTC), in all rooms" in body(listing)
            assert "#1" not in body(listing)  # a one-off that ran is done
            assert body(await o.ask(room, "!unschedule 2", sender=bot.user_id)) == "Cancelled #2."
            assert body(await o.ask(room, "!unschedule 2", sender=bot.user_id)).startswith(
                "⚠️ There is no"
            )
            audit = body(await o.ask(room, "!audit 10", sender=bot.user_id))
            for action in ("`schedule`", "`unschedule`", "`announce`"):
                assert action in audit


async def test_welcome_settings_per_room(synapse, tmp_path):
    owner, member = synapse.fresh_account("owner"), synapse.fresh_account("member")
    async with running_bot(synapse, tmp_path, admins=[owner.user_id], extra=FAKE_SSO) as bot:
        async with (
            await TestUser.login(synapse.base_url, owner) as o,
            await TestUser.login(synapse.base_url, member) as m,
        ):
            room = await group_room(o, bot.user_id, member.user_id, name="Garden")
            await m.join(room)
            refused = await m.ask(room, "!welcome on", sender=bot.user_id)
            assert body(refused).startswith("⚠️ I don't know the command `!welcome`")
            shown = await o.ask(room, "!welcome show", sender=bot.user_id)
            assert body(shown) == (
                "Welcomes in this room: **off**. "
                "Template (from the config): `Welcome {mention} to {room}! {login_hint}`"
            )
            bad = await o.ask(room, "!welcome set Hi {nickname}", sender=bot.user_id)
            assert (
                body(bad)
                == "⚠️ The template may only use {name}, {mention}, {room}, {login_hint} in braces."
            )
            await o.ask(room, "!welcome set Hello {name}, this is {room}.", sender=bot.user_id)
            test = await o.ask(room, "!welcome test", sender=bot.user_id)
            assert (
                body(test)
                == f"This is how a newcomer would be greeted:\n\nHello {owner.user_id}, this is Garden."
            )
            assert (
                body(await o.ask(room, "!welcome off", sender=bot.user_id))
                == "Welcomes are now **off** in this room."
            )
            audit = body(await o.ask(room, "!audit 5", sender=bot.user_id))
            assert "`welcome.settings`" in audit
