"""What the bot sends, as a user's client sees it: replies in threads, edits, typing notices."""

from __future__ import annotations

import asyncio

import pytest

from bot.matrix.render import message_content
from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser
from tests.integration.test_bot_core import dm_with

pytestmark = pytest.mark.synapse


async def test_command_in_a_thread_is_answered_in_that_thread(synapse, tmp_path):
    async with running_bot(synapse, tmp_path) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("jo")) as jo:
            room = await jo.create_room(invite=[bot.user_id], name="community")
            await jo.wait_for_membership(room, bot.user_id, "join", timeout=15)
            root = await jo.send_text(room, "a topic")
            ping = await jo.send_text(
                room, "!ping",
                extra_content={"m.relates_to": {"rel_type": "m.thread", "event_id": root}},
            )  # fmt: skip
            reply = await jo.wait_for_event(
                room,
                lambda e: (
                    e["sender"] == bot.user_id
                    and e["content"]
                    .get("m.relates_to", {})
                    .get("m.in_reply_to", {})
                    .get("event_id")
                    == ping
                ),
            )
            assert reply["content"]["m.relates_to"] == {
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": False,
                "m.in_reply_to": {"event_id": ping},
            }


async def test_edits_and_typing_reach_the_user(synapse, tmp_path):
    async with running_bot(synapse, tmp_path) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("kim")) as kim:
            room = await dm_with(kim, bot.user_id)
            sender = bot.app.sender

            await sender.typing(room, True)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while bot.user_id not in kim.client.rooms[room].typing_users:
                assert loop.time() < deadline, "the typing notice never arrived"
                await asyncio.sleep(0.05)
            await sender.typing(room, False)

            first = await sender.send(room, message_content("thinking…"))
            edit_id = await sender.edit(room, first, message_content("the **answer**"))
            edit = await kim.wait_for_event(room, lambda e: e["event_id"] == edit_id)
            assert edit["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": first}
            assert (
                edit["content"]["m.new_content"]["formatted_body"] == "the <strong>answer</strong>"
            )
            assert edit["content"]["m.new_content"]["body"] == "the **answer**"
