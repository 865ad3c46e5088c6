"""`!summary` and room context against real Synapse (plain and encrypted rooms), the real bot and
the LLM stub over HTTP: the bot reads history through /messages (decrypting what is encrypted)
and never gives a member what they could not see themselves."""

from __future__ import annotations

import asyncio
from typing import Any

import nio
import pytest

from tests.harness.bot import running_bot
from tests.harness.llm_stub import LlmStub
from tests.harness.matrix_user import TestUser
from tests.integration.test_bot_core import wait_for_invite_and_join

pytestmark = pytest.mark.synapse


@pytest.fixture
async def stub():
    async with LlmStub(api_key="sk-test", chunk_delay=0) as server:
        server.reply = "Here is what happened."
        yield server


def gpt(stub: LlmStub, **overrides: Any) -> dict[str, Any]:
    return {"gpt": {
        "base_url": stub.base_url, "api_key": "sk-test", "model": "stub-model",
        "system_prompt": "You are the test assistant.", "max_retries": 0, "timeout": 5.0,
        "require_sso": False, **overrides,
    }}  # fmt: skip


def visibility(value: str) -> dict[str, Any]:
    return {
        "type": "m.room.history_visibility",
        "state_key": "",
        "content": {"history_visibility": value},
    }


def summary_request(stub: LlmStub, since: int) -> str:
    """The transcript the model was given by the one summary request after `since`."""
    asked = [r for r in stub.requests[since:] if "Messages, oldest first" in str(r["messages"])]
    assert len(asked) == 1, f"expected one summary request: {stub.requests[since:]}"
    return asked[0]["messages"][-1]["content"]


async def room_with(owner: TestUser, bot_id: str, later: TestUser, **options: Any) -> str:
    """A room of three (two would be a DM with the bot, where every message is a question);
    `later` is invited now and joins when the test says."""
    room = await owner.create_room(invite=[bot_id, later.user_id], name="club", **options)
    await owner.wait_for_membership(room, bot_id, "join", timeout=15)
    return room


async def join(user: TestUser, owner: TestUser, room: str) -> None:
    await user.join(room)
    await owner.wait_for_membership(room, user.user_id, "join", timeout=15)


async def test_summary_leaves_out_what_the_asker_could_not_see(synapse, stub, tmp_path):
    async with running_bot(synapse, tmp_path, extra=gpt(stub)) as bot:
        async with (
            await TestUser.login(synapse.base_url, synapse.fresh_account("ann")) as ann,
            await TestUser.login(synapse.base_url, synapse.fresh_account("ben")) as ben,
        ):
            # history visibility "joined": a newcomer sees nothing from before they joined
            room = await room_with(ann, bot.user_id, ben, initial_state=[visibility("joined")])
            await ann.send_text(room, "the early plan is alpha")
            gone = await ann.send_text(room, "please forget this slip")
            await ann.client.room_redact(room, gone, reason="oops")
            await join(ben, ann, room)
            await ann.send_text(room, "welcome ben, we meet at noon")
            before = len(stub.requests)
            command = await ben.send_text(room, "!summary 20")
            reply = await ben.wait_for_message(
                room, sender=bot.user_id, after_event_id=command, timeout=30
            )
            seen = summary_request(stub, before)
            assert "we meet at noon" in seen
            assert "early plan" not in seen and "forget this slip" not in seen
            assert "!summary" not in seen
            relates = reply["content"]["m.relates_to"]  # answered in a thread on the command
            assert relates["rel_type"] == "m.thread" and relates["event_id"] == command
            assert "Summary of the last message" in reply["content"]["body"]
            assert reply["content"]["body"].endswith("Here is what happened.")

            # the room's creator was there all along: the early plan, still not the redacted one
            before = len(stub.requests)
            await ann.ask(room, "!summary", sender=bot.user_id, timeout=30)
            seen = summary_request(stub, before)
            assert "early plan is alpha" in seen and "we meet at noon" in seen
            assert "forget this slip" not in seen

            # "unread": only what came after the asker's read receipt
            marker = await ann.send_text(room, "read up to here")
            await ann.send_text(room, "news after the marker")
            ok = await ben.client.room_read_markers(room, marker, marker)
            assert isinstance(ok, nio.RoomReadMarkersResponse), ok
            before = len(stub.requests)
            await ben.ask(room, "!summary unread", sender=bot.user_id, timeout=30)
            seen = summary_request(stub, before)
            assert "news after the marker" in seen and "read up to here" not in seen
            assert "we meet at noon" not in seen

            # --dm: privately, and the room only hears that it was sent
            before = len(stub.requests)
            note = await ben.ask(room, "!summary since 1h --dm", sender=bot.user_id, timeout=30)
            assert note["content"]["body"] == "I sent you the summary by direct message."
            dm = await wait_for_invite_and_join(ben, bot.user_id)
            private = await ben.wait_for_message(dm, sender=bot.user_id, timeout=20)
            assert "Summary of the last 1h (3 messages)" in private["content"]["body"]
            seen = summary_request(stub, before)
            assert "early plan" not in seen and "we meet at noon" in seen

        # history visibility "shared": members see the room's history from before they came
        async with (
            await TestUser.login(synapse.base_url, synapse.fresh_account("cat")) as cat,
            await TestUser.login(synapse.base_url, synapse.fresh_account("dan")) as dan,
        ):
            room = await room_with(cat, bot.user_id, dan, initial_state=[visibility("shared")])
            await cat.send_text(room, "shared history before dan")
            await join(dan, cat, room)
            before = len(stub.requests)
            await dan.ask(room, "!summary 10", sender=bot.user_id, timeout=30)
            assert "shared history before dan" in summary_request(stub, before)


async def test_summary_in_an_encrypted_room_and_room_context_for_questions(synapse, stub, tmp_path):
    owner = synapse.fresh_account("eve")
    async with running_bot(
        synapse, tmp_path, extra=gpt(stub), encryption=True, admins=[owner.user_id]
    ) as bot:
        async with (
            await TestUser.login(synapse.base_url, owner) as eve,
            await TestUser.login(synapse.base_url, synapse.fresh_account("fin")) as fin,
        ):
            room = await room_with(
                eve, bot.user_id, fin, encrypted=True, initial_state=[visibility("joined")]
            )
            await eve.send_text(room, "encrypted early secret")
            await join(fin, eve, room)
            await asyncio.sleep(1)  # let eve's client learn fin's device before sharing keys
            await eve.send_text(room, "encrypted hello fin")
            command = await fin.send_text(room, "!summary 10")
            reply = await fin.wait_for_message(
                room, sender=bot.user_id, after_event_id=command, timeout=40
            )
            assert fin.is_decrypted(reply["event_id"])
            seen = summary_request(stub, 0)
            assert "encrypted hello fin" in seen and "encrypted early secret" not in seen
            assert "sent an image" not in seen

            # Room context: questions see the recent messages (what the asker could see), and
            # the answer stays in the room.
            set_it = await eve.ask(room, "!gpt context 5", sender=bot.user_id, timeout=20)
            assert "the last 5 messages" in set_it["content"]["body"]
            stub.reply = None  # echo
            question = await fin.send_text(room, "!ask what did I miss?")
            answer = await fin.wait_for_event(
                room,
                lambda e: (
                    e["sender"] == bot.user_id
                    and e["content"]
                    .get("m.relates_to", {})
                    .get("m.in_reply_to", {})
                    .get("event_id")
                    == question
                ),
                timeout=40,
            )
            assert answer["content"]["m.relates_to"].get("rel_type") != "m.thread"
            system = [m["content"] for m in stub.last_messages() if m["role"] == "system"]
            context = "\n".join(system)
            assert "encrypted hello fin" in context and "encrypted early secret" not in context
            assert "Recent messages in this room" in context
            assert stub.last_messages()[-1]["content"].endswith("what did I miss?")


async def test_a_slow_summary_does_not_hold_up_the_rooms_next_commands(synapse, stub, tmp_path):
    """The model takes 4 s: `!ping` sent after `!summary` in the same room is answered first."""
    async with running_bot(synapse, tmp_path, extra=gpt(stub)) as bot:
        async with (
            await TestUser.login(synapse.base_url, synapse.fresh_account("eli")) as eli,
            await TestUser.login(synapse.base_url, synapse.fresh_account("fay")) as fay,
        ):
            room = await room_with(eli, bot.user_id, fay)
            await eli.send_text(room, "something worth summing up")
            stub.latency = 4.0
            asked = await eli.send_text(room, "!summary 5")
            pong = await eli.ask(room, "!ping", sender=bot.user_id, timeout=3)
            assert pong["content"]["body"].startswith("Pong")
            summary = await eli.wait_for_message(
                room, sender=bot.user_id, after_event_id=pong["event_id"], timeout=30
            )
            assert summary["content"]["m.relates_to"]["event_id"] == asked
            assert summary["content"]["body"].endswith("Here is what happened.")
