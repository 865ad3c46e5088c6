"""The bot against a real Synapse: commands, autojoin, restarts, reconnects, outbox."""

from __future__ import annotations

import asyncio

import pytest

from bot.community.outbox import Outbox
from bot.store.database import Database
from bot.store.events import EventLedger
from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser

pytestmark = pytest.mark.synapse


def answered(user: TestUser, room: str, bot_id: str) -> list[str | None]:
    """The events the bot's messages in `room` reply to, in order."""
    return [
        in_reply_to(e)
        for e in user.events(room)
        if e["sender"] == bot_id and e["type"] == "m.room.message"
    ]


def in_reply_to(event: dict) -> str | None:
    return event["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")


async def dm_with(user: TestUser, bot_id: str) -> str:
    room = await user.create_room(invite=[bot_id], is_direct=True)
    await user.wait_for_membership(room, bot_id, "join", timeout=15)
    return room


async def test_help_and_ping_in_a_dm(synapse, tmp_path):
    async with running_bot(synapse, tmp_path) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("alice")) as alice:
            room = await dm_with(alice, bot.user_id)

            help_ = await alice.ask(room, "!help", sender=bot.user_id)
            content = help_["content"]
            assert content["msgtype"] == "m.notice"
            assert "`!ping` — Check that I am here" in content["body"]
            assert "<code>!ping</code>" in content["formatted_body"]
            # In a room of two an empty m.mentions only costs the homeserver (sender.py).
            assert "m.mentions" not in content
            # Ordinary users are not shown moderator or admin commands (none exist yet, so: only these).
            assert "!help [command]" in content["body"]

            ping_id = await alice.send_text(room, "!ping")
            pong = await alice.wait_for_message(room, sender=bot.user_id, after_event_id=ping_id)
            assert in_reply_to(pong) == ping_id
            assert pong["content"]["body"].startswith("Pong! Your message reached me in ")
            assert pong["content"]["body"].endswith(" ms.")

            details = await alice.ask(room, "!help ping", sender=bot.user_id)
            assert details["content"]["body"].startswith("`!ping`")


async def test_unknown_command_bad_arguments_and_mentions(synapse, tmp_path):
    async with running_bot(synapse, tmp_path) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("bob")) as bob:
            room = await dm_with(bob, bot.user_id)
            typo = await bob.ask(room, "!pnig", sender=bot.user_id)
            assert (
                "I don't know the command `!pnig`. Did you mean `!ping`?" in typo["content"]["body"]
            )

            bad = await bob.ask(room, "!help ping pong", sender=bot.user_id)
            assert bad["content"]["body"] == "⚠️ unexpected 'pong'. Usage: `!help [command]`"

            localpart = bot.user_id[1:].split(":")[0]
            pill = f'<a href="https://matrix.to/#/{bot.user_id}">{localpart}</a>: ping'
            event_id = await bob.send_text(
                room, f"{localpart}: ping", formatted_body=pill,
                extra_content={"m.mentions": {"user_ids": [bot.user_id]}},
            )  # fmt: skip
            pong = await bob.wait_for_message(room, sender=bot.user_id, after_event_id=event_id)
            assert pong["content"]["body"].startswith("Pong!")

            # In a group room ordinary chatter is ignored: the bot's next message answers the !ping.
            group = await bob.create_room(invite=[bot.user_id, synapse.fresh_account("x").user_id])
            await bob.wait_for_membership(group, bot.user_id, "join", timeout=15)
            chatter = await bob.send_text(group, "just talking")
            ping = await bob.send_text(group, "!ping")
            reply = await bob.wait_for_message(group, sender=bot.user_id, after_event_id=chatter)
            assert in_reply_to(reply) == ping


async def test_autojoin_only_from_allowed_inviters(synapse, tmp_path):
    friend = synapse.fresh_account("friend")
    async with running_bot(synapse, tmp_path, autojoin_from=[friend.user_id]) as bot:
        async with (
            await TestUser.login(synapse.base_url, friend) as ok,
            await TestUser.login(synapse.base_url, synapse.fresh_account("stranger")) as no,
        ):
            refused = await no.create_room(invite=[bot.user_id])
            await no.wait_for_membership(refused, bot.user_id, "leave", timeout=15)
            accepted = await ok.create_room(invite=[bot.user_id])
            await ok.wait_for_membership(accepted, bot.user_id, "join", timeout=15)


async def test_fresh_start_skips_backlog_and_joined_room_history(synapse, tmp_path):
    bot_account = synapse.fresh_account("bot")
    async with await TestUser.login(synapse.base_url, synapse.fresh_account("carol")) as carol:
        # History made before the bot ever ran: a room it is invited to, with commands in it.
        room = await carol.create_room(invite=[bot_account.user_id], is_direct=True)
        old = [await carol.send_text(room, "!ping") for _ in range(2)]
        async with running_bot(synapse, tmp_path, account=bot_account) as bot:
            await carol.wait_for_membership(room, bot.user_id, "join", timeout=15)
            new = await carol.send_text(room, "!ping")
            reply = await carol.wait_for_message(room, sender=bot.user_id, after_event_id=old[-1])
            assert in_reply_to(reply) == new
            await asyncio.sleep(1.5)
            assert answered(carol, room, bot.user_id) == [new]


async def test_restart_neither_repeats_nor_loses_commands(synapse, tmp_path):
    async with running_bot(synapse, tmp_path) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("dave")) as dave:
            room = await dm_with(dave, bot.user_id)
            await dave.ask(room, "!ping", sender=bot.user_id)  # the bot has handled a batch

            # Remember where the bot was before the next command, to replay it later.
            db = Database(bot.config.database.url)
            ledger = EventLedger(db, bot.user_id)
            token_before = await ledger.sync_token()
            first = await dave.send_text(room, "!ping")
            await dave.wait_for_message(room, sender=bot.user_id, after_event_id=first)
            await bot.stop()

            # While the bot is down a command arrives: it must be answered after the restart.
            while_down = await dave.send_text(room, "!ping")
            # Replay: rewind the stored sync token so the homeserver sends `first` again.
            await ledger.save_sync_token(token_before)
            await db.close()
            await bot.start()
            reply = await dave.wait_for_message(
                room, sender=bot.user_id, after_event_id=while_down, timeout=15
            )
            assert in_reply_to(reply) == while_down
            after = await dave.send_text(room, "!ping")
            await dave.wait_for_message(room, sender=bot.user_id, after_event_id=after)

            replies = answered(dave, room, bot.user_id)
            assert replies.count(first) == 1
            assert replies.count(while_down) == 1
            assert bot.runs == 2


async def test_restart_reuses_the_same_device(synapse, tmp_path):
    async with running_bot(synapse, tmp_path) as bot:
        first_device = (tmp_path / "data" / "matrix-credentials.json").read_text()
        await bot.restart()
        assert (tmp_path / "data" / "matrix-credentials.json").read_text() == first_device
        mode = (tmp_path / "data" / "matrix-credentials.json").stat().st_mode & 0o777
        assert mode == 0o600


async def test_reconnects_after_the_homeserver_restarts(synapse, tmp_path):
    async with running_bot(synapse, tmp_path) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("erin")) as erin:
            room = await dm_with(erin, bot.user_id)
            await erin.ask(room, "!ping", sender=bot.user_id)
            await asyncio.to_thread(synapse.restart)
            reply = await erin.ask(room, "!ping", sender=bot.user_id, timeout=30)
            assert reply["content"]["body"].startswith("Pong!")
            assert not bot.task.done()


async def test_outbox_messages_reach_the_user_by_dm_also_after_a_restart(synapse, tmp_path):
    async with running_bot(synapse, tmp_path) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("fay")) as fay:
            db = Database(bot.config.database.url)
            await bot.stop()
            # Queued while the bot is down (as the web app does): delivered once it is back.
            await Outbox(db).put("You are now linked.", recipient=fay.user_id)
            await bot.start()
            room = await wait_for_invite_and_join(fay, bot.user_id)
            message = await fay.wait_for_message(room, sender=bot.user_id, timeout=15)
            assert message["content"]["body"] == "You are now linked."
            assert await Outbox(db).pending() == []
            await db.close()


async def wait_for_invite_and_join(user: TestUser, inviter: str, timeout: float = 15) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for room_id, room in list(user.client.invited_rooms.items()):
            if room.inviter == inviter:
                return await user.join(room_id)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{user.user_id} got no invite from {inviter} within {timeout} s")


async def test_a_malformed_message_does_not_stall_the_bot(synapse, tmp_path):
    async with running_bot(synapse, tmp_path) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("mal")) as mal:
            room = await dm_with(mal, bot.user_id)
            # Synapse refuses some malformed shapes (m.mentions.user_ids must be a list) but
            # passes these on; federated events can carry anything.
            await mal.send_text(room, "!ping", formatted_body=12)  # type: ignore[arg-type]
            await mal.send_text(
                room, "* x",
                extra_content={
                    "m.relates_to": {"rel_type": "m.replace", "event_id": 5},
                    "m.new_content": "x",
                },
            )  # fmt: skip
            await mal.send_text(
                room,
                "in a thread?",
                extra_content={"m.relates_to": {"rel_type": "m.thread", "event_id": []}},
            )
            ping = await mal.send_text(room, "!ping")
            reply = await mal.wait_for_event(room, lambda e: in_reply_to(e) == ping, timeout=15)
            assert reply["content"]["body"].startswith("Pong!")
            assert not bot.task.done()
